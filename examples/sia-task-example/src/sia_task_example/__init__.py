"""sia task package: example (its task folder is ``task/``, registered by ``plugin``)."""
