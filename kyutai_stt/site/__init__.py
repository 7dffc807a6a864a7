"""The browser app as a site: building it (with a model package) and serving it on this machine."""
