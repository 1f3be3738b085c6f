# postBuild copies this into ~/.jupyter. JupyterLab 4.6 sends widget messages over a kernel
# subshell; jupyter_server does not ignore the subshell requests' status messages, so without
# these lines the status bar can say Idle while a cell runs (README.md, "GPU and CPU").
c = get_config()  # noqa: F821 - Jupyter's config loader provides it
c.MappingKernelManager.untracked_message_types.extend(
    [
        f"{verb}_subshell_{kind}"
        for verb in ("create", "delete", "list")
        for kind in ("request", "reply")
    ]
)
