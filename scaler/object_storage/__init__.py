"""Object storage: blobs by id with owners (``store``) behind a socket (``server``)."""
