"""Upstream's shared configuration pieces (``LoggingConfig``, ``WorkerConfig``...), faces over
``scaler.config.components`` (see ``scaler.config.faces``)."""
