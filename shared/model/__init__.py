"""The model as a shared contract: the plain-file format, its verified loader and the one
scoring arithmetic. Training writes it; serving and monitoring read it.

``format`` (declared parts, writer, verified loader, spec check), ``bundle`` (per-segment
bundles), ``scoring`` (the one sparse margin and sigmoid), ``registry`` (downloading a
registered version's files)."""
