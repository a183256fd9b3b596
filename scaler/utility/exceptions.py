"""Exceptions raised to users. Names and module path match upstream Scaler for drop-in use."""


class TaskNotFoundError(Exception):
    pass


class WorkerDiedError(Exception):
    """The worker running the task died, and the task could not be run elsewhere."""


class NoWorkerError(Exception):
    pass


class DisconnectedError(Exception):
    """The connection to the scheduler was lost."""


class ProcessorDiedError(Exception):
    """The processor running the task died (killed, segfault, ``os._exit``...)."""


class TaskExceptionNotSerializableError(Exception):
    """The task raised an exception that could not be pickled; the message keeps its type and text."""


class DeserializeObjectError(Exception):
    pass


class MissingObjects(Exception):
    """An ObjectReference (or a function/argument) is not in object storage any more."""


class ClientCancelledException(Exception):
    pass


class ClientShutdownException(Exception):
    """The cluster was shut down while this client was using it."""


class ClientQuitException(Exception):
    """The client was used after it disconnected."""


class ObjectStorageException(Exception):
    """Object storage refused or lost an object (for example: it is full)."""


class CapnpDeserializationError(Exception):
    """Kept for import compatibility: malformed messages raise ProtocolError here."""


class AuthenticationError(ConnectionError):
    """The peer could not be authenticated (wrong or missing auth key, or protocol mismatch)."""


class TLSError(AuthenticationError):
    """A ``tls://`` connection could not be set up: the server's certificate could not be
    verified (unknown CA: give ``tls_ca``; or it does not name the host), or only one side
    speaks TLS (a ``tcp://`` address for a TLS port, or the other way round)."""


class TaskTimeoutError(TimeoutError):
    """A task ran longer than its workers' ``task_timeout_seconds`` and was stopped."""


class TaskExitError(Exception):
    """The task raised ``SystemExit`` (``sys.exit()``), ``KeyboardInterrupt`` or another
    exception that is not an ``Exception``: re-raising it in your program would end it, so
    it arrives as this (the original traceback is its ``__cause__``)."""


class SchedulerBusyError(Exception):
    """The scheduler refused a task: ``max_number_of_tasks_waiting`` tasks wait already.
    Nothing of it ran; submit it again later."""
