"""Every message of the scaler protocol, declared once.

Payload fields (``payload``, ``call``) are opaque bytes to the scheduler and to the
object storage server: only clients and workers (de)serialise them.
"""

import struct
from typing import List, Sequence

from .codec import declare

MAGIC = 0x53434C52  # b"SCLR"
PROTOCOL_VERSION = 9  # 2: GraphSubmit, WorkerGroupStopped.refusal, STATUS_REJECTED; 3: task priorities;
#                       4: WorkerStatus, StatusSnapshot (monitoring); 5: TaskOutput (stream_output);
#                       6: shared memory for big objects (ObjectShm*, ObjectPutShm, ObjectGetShm...);
#                       7: batch frames (codec.encode_batch) of TaskSubmit, WorkerTask, TaskResult;
#                       8: the packed Call's own layout (protocol/call.py, PACKED_CALL_TYPE);
#                       9: processors connect to the scheduler (ProcessorConnect...): the agent is off a task's way

# Roles a peer announces in its Hello.
ROLE_CLIENT = 1
ROLE_WORKER = 2
ROLE_MANAGER = 3
ROLE_MONITOR = 4
ROLE_SCHEDULER = 5  # the scheduler talking to a separate object storage server
ROLE_NAMES = {ROLE_CLIENT: "client", ROLE_WORKER: "worker", ROLE_MANAGER: "worker manager",
              ROLE_MONITOR: "monitor", ROLE_SCHEDULER: "scheduler"}

# TaskResult.status
STATUS_OK = 0  # payload: the serialised result
STATUS_OK_OBJECT = 1  # payload: object id of the serialised result in object storage
STATUS_FAILED = 2  # payload: pickled exception (may be empty); detail: remote traceback text
STATUS_CANCELLED = 3
STATUS_WORKER_DIED = 4  # detail: why
STATUS_PROCESSOR_DIED = 5  # detail: exit code / signal
STATUS_MISSING_OBJECT = 6  # detail: which object
STATUS_NOT_SERIALIZABLE = 7  # detail: "Type: message" of an exception that could not be pickled
STATUS_REJECTED = 8  # the scheduler refused the task or graph; detail: why
STATUS_BUSY = 10  # refused: max_number_of_tasks_waiting tasks are waiting already; detail: the figures
STATUS_TIMED_OUT = 9  # it ran past the worker's task_timeout_seconds and was stopped; detail: which, and the limit

# TaskSubmit.flags / WorkerTask.flags
FLAG_PROFILE = 1  # measure the task; a successful result carries a ProfileResult in its detail
FLAG_NEEDS_OBJECTS = 2  # the call refers to objects besides the function (worker must read the Call)
# Set by the scheduler on a graph node whose result other tasks read: the worker stores the
# result in object storage under call.graph_result_id(task id) (owned by the task's client),
# even if small, and answers STATUS_OK_OBJECT with that id.
FLAG_KEEP_RESULT = 4
# Client(stream_output=True): what the task writes to sys.stdout/sys.stderr travels back as
# TaskOutput messages while it runs.
FLAG_STREAM_OUTPUT = 8

# --- handshake (the only frames accepted before authentication) ---
Hello = declare(1, "Hello", [("magic", "u32"), ("version", "u16"), ("role", "u8"), ("nonce", "bytes")])
Welcome = declare(2, "Welcome", [("version", "u16"), ("auth_required", "bool"), ("nonce", "bytes"),
                                 ("proof", "bytes")])
Proof = declare(3, "Proof", [("proof", "bytes")])
Accepted = declare(4, "Accepted", [])
Rejected = declare(5, "Rejected", [("reason", "str")])

# --- client <-> scheduler ---
ClientConnect = declare(10, "ClientConnect", [("client_id", "bytes")])
ClientConnectReply = declare(11, "ClientConnectReply", [("object_storage_address", "str"), ("protected", "bool"),
                                                        ("scheduler_version", "str")])
Heartbeat = declare(12, "Heartbeat", [("sent_at", "f64")])
HeartbeatEcho = declare(13, "HeartbeatEcho", [("sent_at", "f64")])
TaskSubmit = declare(14, "TaskSubmit", [("task_id", "bytes"), ("flags", "u8"), ("func_id", "bytes"),
                                        ("call", "bytes"), ("capabilities", "str"), ("priority", "i64")], batchable=True)
TaskCancel = declare(15, "TaskCancel", [("task_id", "bytes")])
# A whole task graph in one frame. Per node: its id, flags byte, function, call, the
# indices (packed little-endian u32) of the nodes whose results it takes, and whether the
# client wants its result (one byte each in ``requested``).
GraphSubmit = declare(26, "GraphSubmit", [("task_ids", "bytes_list"), ("flags", "bytes"), ("func_ids", "bytes_list"),
                                          ("calls", "bytes_list"), ("deps", "bytes_list"), ("requested", "bytes"),
                                          ("priority", "i64")])
_INDEX = struct.Struct("<I")


def pack_indices(indices: Sequence[int]) -> bytes:
    """GraphSubmit's per-node dependency list: little-endian u32 node indices."""
    return b"".join(_INDEX.pack(i) for i in indices)


def unpack_indices(blob: bytes) -> List[int]:
    if len(blob) % _INDEX.size:
        raise ValueError("malformed dependency list")
    return [i for (i,) in _INDEX.iter_unpack(blob)]


TaskResult = declare(16, "TaskResult", [("task_id", "bytes"), ("status", "u8"), ("payload", "chunks"),
                                        ("detail", "str")], batchable=True)
# A piece of what a running task wrote (stream 1: stdout, 2: stderr), UTF-8; processor ->
# agent -> scheduler -> the task's client, in order, before the task's TaskResult.
TaskOutput = declare(28, "TaskOutput", [("task_id", "bytes"), ("stream", "u8"), ("data", "bytes")])
ClientDisconnect = declare(17, "ClientDisconnect", [("shutdown", "bool")])
ShutdownRefused = declare(18, "ShutdownRefused", [("reason", "str")])
SchedulerShutdown = declare(19, "SchedulerShutdown", [("reason", "str")])

# --- worker <-> scheduler ---
# task_timeout: the worker's task_timeout_seconds (0: none), which the scheduler enforces;
# processor_token: what this worker's processors present in their ProcessorConnect.
WorkerConnect = declare(20, "WorkerConnect", [("worker_id", "bytes"), ("name", "str"), ("queue_size", "u32"),
                                              ("capabilities", "str"), ("pid", "u32"), ("manager_id", "str"),
                                              ("task_timeout", "f64"), ("processor_token", "bytes")])
WorkerConnectReply = declare(21, "WorkerConnectReply", [("object_storage_address", "str")])
WorkerHeartbeat = declare(22, "WorkerHeartbeat", [("sent_at", "f64"), ("queued", "u32"), ("rss", "u64"),
                                                  ("cpu", "f64")])
WorkerTask = declare(23, "WorkerTask", [("task_id", "bytes"), ("client_id", "bytes"), ("flags", "u8"),
                                        ("func_id", "bytes"), ("call", "bytes"), ("priority", "i64")], batchable=True)
# force: also stop it if running (restarts the processor); otherwise only take it back if not started.
WorkerTaskCancel = declare(24, "WorkerTaskCancel", [("task_id", "bytes"), ("force", "bool")])
WorkerDisconnect = declare(25, "WorkerDisconnect", [("reason", "str")])
# What a worker's agent and processor are doing, for the monitor; sent with each heartbeat.
# agent_cpu / processor_cpu: percent of one core since the previous report; running: tasks
# its processors are running; suspended: tasks blocked waiting for tasks they submitted
# (upstream's name; scaler suspends no processor, see "Nested tasks" in the architecture docs).
WorkerStatus = declare(27, "WorkerStatus", [("agent_cpu", "f64"), ("agent_rss", "u64"), ("processor_pid", "u32"),
                                            ("processor_cpu", "f64"), ("processor_rss", "u64"), ("running", "u32"),
                                            ("suspended", "u32")])

# The scheduler keeps each worker's task pipeline (scheduler/pipeline.py) and talks to its
# processor over a connection of the processor's own (ProcessorConnect); the agent fetches
# and stores objects for the processor and replaces it when told to.
# scheduler -> agent: fetch an object and pass it to the processor, then say WorkerObjectReady.
WorkerFetchObject = declare(80, "WorkerFetchObject", [("object_id", "bytes")])
# agent -> scheduler: the object is on its way to the processor (found), or not in storage.
WorkerObjectReady = declare(81, "WorkerObjectReady", [("object_id", "bytes"), ("found", "bool")])
# scheduler -> agent: the processor is to forget these objects (sent behind the objects themselves).
WorkerDropObjects = declare(82, "WorkerDropObjects", [("object_ids", "bytes_list")])
# scheduler -> agent: stop the processor and start another (a running task cancelled or timed out).
WorkerRestartProcessor = declare(83, "WorkerRestartProcessor", [("reason", "str")])
# agent -> scheduler: the processor ``pid`` exited; detail: its exit code or signal.
WorkerProcessorExited = declare(84, "WorkerProcessorExited", [("pid", "u32"), ("detail", "str")])
# agent -> scheduler: a result the processor handed over (ProcessorStore) is in object storage
# (error "") or could not be stored.
WorkerObjectStored = declare(87, "WorkerObjectStored", [("object_id", "bytes"), ("error", "str")])

# --- worker manager <-> scheduler ---
# capacity: worker groups it may run; -1 no limit, 0 a fixed pool the scheduler never scales.
ManagerConnect = declare(50, "ManagerConnect", [("manager_id", "str"), ("capacity", "i64"), ("mode", "str"),
                                                ("capabilities", "str"), ("pid", "u32")])
ManagerConnectReply = declare(51, "ManagerConnectReply", [("accepted", "bool"), ("reason", "str"),
                                                          ("scaling", "str")])
ManagerHeartbeat = declare(52, "ManagerHeartbeat", [("sent_at", "f64"), ("groups", "u32")])
StartWorkerGroup = declare(53, "StartWorkerGroup", [("request_id", "u64")])
# On success group_id names the group; its one worker connects with that name.
WorkerGroupStarted = declare(54, "WorkerGroupStarted", [("request_id", "u64"), ("ok", "bool"), ("group_id", "str"),
                                                        ("reason", "str")])
ShutdownWorkerGroup = declare(55, "ShutdownWorkerGroup", [("group_id", "str")])
# refusal: why it was not stopped, as a worker_manager.errors.Refusal value ("" when ok).
WorkerGroupStopped = declare(56, "WorkerGroupStopped", [("group_id", "str"), ("ok", "bool"), ("refusal", "str"),
                                                        ("reason", "str")])

# --- anyone <-> object storage ---
ObjectPut = declare(30, "ObjectPut", [("object_id", "bytes"), ("owner_id", "bytes"), ("payload", "chunks")])
ObjectPutReply = declare(31, "ObjectPutReply", [("object_id", "bytes"), ("error", "str")])
ObjectGet = declare(32, "ObjectGet", [("object_id", "bytes")])
ObjectGetReply = declare(33, "ObjectGetReply", [("object_id", "bytes"), ("found", "bool"), ("payload", "bytes")])
ObjectDelete = declare(34, "ObjectDelete", [("object_ids", "bytes_list")])
# Also sent by the scheduler to workers when a client leaves: drop what you cached for it.
ObjectDeleteOwner = declare(35, "ObjectDeleteOwner", [("owner_id", "bytes")])
# Shared memory with peers on the storage's host (scaler/io/shm.py). On every new connection
# the storage sends an offer: its probe memfd /proc/<pid>/fd/<fd> named after ``token``
# (token "" when it has no shared memory). A peer that can open it answers with the nonce
# it read there, and with a probe of its own (pid 0 when it has none); the storage reads
# that one too and says what it could do: shared reads (``ObjectGetShm`` replies) are on
# once the nonce matched, shared puts (``ObjectPutShm``) if the peer's probe read right.
ObjectShmOffer = declare(36, "ObjectShmOffer", [("pid", "u32"), ("fd", "u32"), ("token", "str")])
ObjectShmAccept = declare(37, "ObjectShmAccept", [("nonce", "bytes"), ("pid", "u32"), ("fd", "u32"),
                                                  ("token", "str"), ("peer_nonce", "bytes")])
ObjectShmReady = declare(38, "ObjectShmReady", [("reads", "bool"), ("puts", "bool")])
# The reply to ObjectGet for an object held in a memfd, to a peer whose shared reads are on:
# open /proc/<storage pid>/fd/<fd> (named after token), the object is ``size`` bytes at ``offset``.
ObjectGetShm = declare(39, "ObjectGetShm", [("object_id", "bytes"), ("fd", "u32"), ("token", "str"),
                                            ("offset", "u64"), ("size", "u64")])
# ObjectGet, but the bytes through the socket (a shared reference could not be opened).
ObjectGetBytes = declare(46, "ObjectGetBytes", [("object_id", "bytes")])
# ObjectPut of a sealed memfd of the peer's (/proc/<peer pid>/fd/<fd>), which the storage
# opens, checks and keeps; the peer keeps its descriptor until the ObjectPutReply.
ObjectPutShm = declare(47, "ObjectPutShm", [("object_id", "bytes"), ("owner_id", "bytes"), ("fd", "u32"),
                                            ("token", "str"), ("size", "u64")])

# --- a processor <-> the scheduler (tasks in, results out: TaskResult, TaskOutput) ---
# The first message of a processor's connection: which worker it belongs to, with the token
# that worker's WorkerConnect announced.
ProcessorConnect = declare(85, "ProcessorConnect", [("worker_id", "bytes"), ("token", "bytes"), ("pid", "u32")])

# --- worker agent <-> its processor (a socketpair, same framing) ---
ProcessorReady = declare(40, "ProcessorReady", [("pid", "u32"), ("error", "str")])
ProcessorObject = declare(41, "ProcessorObject", [("object_id", "bytes"), ("payload", "bytes")])
ProcessorDropObjects = declare(42, "ProcessorDropObjects", [("object_ids", "bytes_list")])
# (scheduler -> processor; owner_id: the task's client, which owns a result it stores)
ProcessorTask = declare(43, "ProcessorTask", [("task_id", "bytes"), ("flags", "u8"), ("func_id", "bytes"),
                                              ("call", "bytes"), ("priority", "i64"), ("owner_id", "bytes")],
                        batchable=True)
# (scheduler -> processor) Skip a task already sent but not started (the processor runs its tasks in order).
ProcessorCancel = declare(44, "ProcessorCancel", [("task_id", "bytes")])
# ProcessorObject whose payload is a memfd passed with the frame (SCM_RIGHTS): ``size``
# bytes at ``offset``.
ProcessorObjectShm = declare(48, "ProcessorObjectShm", [("object_id", "bytes"), ("offset", "u64"), ("size", "u64")])
# processor -> agent: store a result (too big to go inline, or a graph node's) under
# ``object_id`` for ``owner_id``: in the sealed memfd passed with the frame (SCM_RIGHTS),
# named after ``token``, or in ``payload`` when ``token`` is "". The processor goes on at
# once and answers the scheduler with status 1 and the id; the agent tells the scheduler
# how the put went (WorkerObjectStored), which announces the result only then.
ProcessorStore = declare(49, "ProcessorStore", [("object_id", "bytes"), ("owner_id", "bytes"), ("token", "str"),
                                                ("payload", "chunks")])
# agent -> processor: the agent has joined the scheduler at ``address``: connect to it (with
# the cluster's key, trusting ``tls_ca`` for tls://) and present ``worker_id`` and ``token``.
ProcessorDial = declare(86, "ProcessorDial", [("address", "str"), ("auth_key", "bytes"), ("tls_ca", "str"),
                                              ("worker_id", "bytes"), ("token", "bytes")])
# processor -> scheduler: the running task ``task_id`` blocks on tasks it submitted (``waiting``
# true) or goes on (false). While it waits, the processor runs tasks that outrank it.
ProcessorWaiting = declare(45, "ProcessorWaiting", [("task_id", "bytes"), ("waiting", "bool")])

# --- scheduler -> monitor subscribers (scaler_top, the web dashboard, scaler.monitor) ---
# payload: the status as UTF-8 JSON (its fields are documented in docs/monitoring.rst).
StatusSnapshot = declare(70, "StatusSnapshot", [("sequence", "u64"), ("sent_at", "f64"), ("payload", "bytes")])

# --- not a frame: the argument list of a task, built by clients, read by processors ---
# serializer_id: object id of the client's cloudpickled Serializer, empty for the default.
# Its kinds (ARG_*), and every function that builds or reads it, are in call.py.
Call = declare(60, "Call", [("serializer_id", "bytes"), ("kinds", "bytes"), ("names", "bytes_list"),
                            ("values", "bytes_list")])
