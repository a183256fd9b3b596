"""Generic binary codec driven by message declarations.

A message is declared once as a list of typed fields; the encoder and decoder are
generated from that declaration. Fixed-size fields and the lengths of the variable-size
ones are packed in a single ``struct`` header, the variable parts follow in order. Any
byte string either decodes to a message or raises :class:`ProtocolError`; nothing in
here ever unpickles.

Frame on the wire: ``<Q length><payload>``; the payload's first byte is the message type.
"""

import itertools
import keyword
import operator
import struct
from typing import Any, Dict, List, Sequence, Tuple, Type, Union

Buffer = Union[bytes, bytearray, memoryview]

FRAME_HEADER = struct.Struct("<Q")

# Fields at least this long are returned as zero-copy memoryview slices of the frame;
# shorter ones become ``bytes``. Callers only ever read them (``len``, slicing, loads).
ZERO_COPY_THRESHOLD = 64 * 1024

_FIXED_KINDS = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "i64": "q", "f64": "d", "bool": "?"}
# "chunks": a "bytes" field whose value may also be given as a list of buffers, sent back to
# back without being joined (a pickle whose big buffers are the caller's own objects); it
# decodes as "bytes" does, and is the same on the wire.
_VAR_KINDS = ("bytes", "str", "bytes_list", "chunks")
_LIST_COUNT = struct.Struct("<I")
_MAX_LIST_ITEMS = 10_000_000

# A batch frame carries several small messages of one batchable type, column by column (see
# encode_batch). Its type byte is not a message type: decode() refuses it, decode_batch reads it.
BATCH_TYPE = 90
BATCH_ITEM_LIMIT = 16 * 1024  # a message with a longer variable field travels in a frame of its own
# At most this many messages in a batch: decoding one allocates a few times its frame's size
# in message objects, and a peer must not be able to make that more than a frame's worth.
BATCH_MAX_MESSAGES = 1024
_BATCH_HEAD = struct.Struct("<BBI")  # BATCH_TYPE, the messages' type, how many


class ProtocolError(Exception):
    """Raised for every malformed frame or message: the only error decoding can raise."""


class Message:
    """Base of declared messages; subclasses are created by :func:`declare`."""

    __slots__ = ()
    TYPE = 0
    FIELDS: Tuple[Tuple[str, str], ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # replaced per class
        raise TypeError("use a declared message class")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, n), getattr(other, n)) for n, _ in self.FIELDS)

    def __repr__(self) -> str:
        parts = []
        for name, _ in self.FIELDS:
            value = getattr(self, name)
            if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > 40:
                value = "<%d bytes>" % len(value)
            parts.append("%s=%r" % (name, value))
        return "%s(%s)" % (type(self).__name__, ", ".join(parts))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, memoryview):
        a = a.tobytes()
    if isinstance(b, memoryview):
        b = b.tobytes()
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


class _Spec:
    __slots__ = ("cls", "struct", "fixed", "variable", "nfixed", "decoder", "batchable", "columns", "order",
                 "item_min")

    def __init__(self, cls: Type[Message], batchable: bool = False) -> None:
        self.cls = cls
        self.fixed = [(n, k) for n, k in cls.FIELDS if k in _FIXED_KINDS]
        self.variable = [(n, k) for n, k in cls.FIELDS if k in _VAR_KINDS]
        self.nfixed = len(self.fixed)
        fmt = "<B" + "".join(_FIXED_KINDS[k] for _, k in self.fixed) + "Q" * len(self.variable)
        self.struct = struct.Struct(fmt)
        self.decoder: Any = None  # generated on this type's first decode (keeps imports cheap)
        # Batches (see encode_batch): a message's fields read in column order, fixed ones
        # first; ``order`` puts decoded columns back in declaration order.
        self.batchable = batchable
        self.columns: Any = None
        self.order: List[int] = []
        self.item_min = 0
        if batchable:  # (only these few: every process declares every message at import)
            names = [n for n, _ in self.fixed] + [n for n, _ in self.variable]
            self.columns = operator.attrgetter(*names) if len(names) > 1 else None
            self.order = [names.index(n) for n, _ in cls.FIELDS]
            self.item_min = (struct.calcsize("<" + "".join(_FIXED_KINDS[k] for _, k in self.fixed))
                             + 8 * len(self.variable))


_SPECS: Dict[int, _Spec] = {}


def declare(type_id: int, name: str, fields: Sequence[Tuple[str, str]], batchable: bool = False) -> Type[Message]:
    """Create a message class with ``__slots__`` and a keyword/positional constructor.

    The constructor and the encoder are generated code (one plain function call each on the
    hot path), compiled the first time the class is used: a process pays only for the
    messages it sends, and importing the message set stays cheap (every process does it).
    ``batchable``: several of these may travel as one batch frame (see :func:`encode_batch`);
    only for messages of fixed, ``bytes``, ``str`` and ``chunks`` fields.
    """
    if type_id in _SPECS or type_id == BATCH_TYPE or not 0 < type_id < 256:
        raise ValueError("message type %d is taken or out of range" % type_id)
    for field_name, kind in fields:
        if kind not in _FIXED_KINDS and kind not in _VAR_KINDS:
            raise ValueError("%s.%s: unknown field kind %r" % (name, field_name, kind))
    names = tuple(n for n, _ in fields)
    if batchable and any(kind == "bytes_list" for _, kind in fields):
        raise ValueError("%s: a message with a bytes_list field cannot be batched" % name)
    for field_name in names:
        if not field_name.isidentifier() or keyword.iskeyword(field_name) or field_name.startswith("_"):
            raise ValueError("%s: %r cannot be a field name" % (name, field_name))

    def first_init(self: Message, *args: Any, **kwargs: Any) -> None:
        init = cls.__init__ = _make_init(names)
        init(self, *args, **kwargs)

    def first_encode(msg: Message) -> List[Buffer]:
        encoder = _make_encoder(spec)
        cls._encode = staticmethod(encoder)
        return encoder(msg)

    cls = type(name, (Message,), {"__slots__": names, "__init__": first_init, "TYPE": type_id,
                                  "FIELDS": tuple(fields), "_encode": staticmethod(first_encode)})
    spec = _SPECS[type_id] = _Spec(cls, batchable)
    if batchable:
        _BATCH_SIZE[cls] = _make_batch_size(spec)
    return cls


def _make_init(names: Tuple[str, ...]) -> Any:
    """Generate a message class's ``__init__``: plain positional/keyword parameters, one per field."""
    source = "def __init__(self%s):\n%s" % ("".join(", " + n for n in names),
                                            "".join("    self.%s = %s\n" % (n, n) for n in names) or "    pass\n")
    namespace: Dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - the source is built from validated identifiers only
    return namespace["__init__"]


def _make_encoder(spec: "_Spec") -> Any:
    """Generate the encoder of one message type: no loops or lookups left on the hot path."""
    lines = ["def encode(msg):"]
    lengths = []
    for i, (field_name, kind) in enumerate(spec.variable):
        if kind == "str":
            lines.append("    v%d = msg.%s.encode('utf-8')" % (i, field_name))
        elif kind == "bytes_list":
            lines.append("    v%d = _pack_list(msg.%s)" % (i, field_name))
        else:
            lines.append("    v%d = msg.%s" % (i, field_name))
        if kind == "chunks":
            lines.append("    if type(v%d) is list:" % i)
            lines.append("        return _encode_chunked(msg)")
        lines.append("    n%d = len(v%d) if type(v%d) is bytes else _nbytes(v%d)" % (i, i, i, i))
        lengths.append("n%d" % i)
    fixed = "".join(", msg.%s" % n for n, _ in spec.fixed)
    lines.append("    try:")
    lines.append("        header = pack(%d%s%s)" % (spec.cls.TYPE, fixed, "".join(", " + n for n in lengths)))
    lines.append("    except struct_error as exc:")
    lines.append("        raise ProtocolError('cannot encode %s: %%s' %% exc) from None" % spec.cls.__name__)
    values = "".join(", v%d" % i for i in range(len(spec.variable)))
    lines.append("    total = %d%s" % (spec.struct.size, "".join(" + " + n for n in lengths)))
    lines.append("    head = frame(total) + header")
    lines.append("    if total < %d:" % ZERO_COPY_THRESHOLD)
    lines.append("        return [b''.join((head%s))]" % (values + "," if len(spec.variable) == 0 else values))
    lines.append("    return [part for part in (head%s) if len(part)]" % (values + "," if not values else values))
    namespace: Dict[str, Any] = {"pack": spec.struct.pack, "struct_error": struct.error, "ProtocolError": ProtocolError,
                                 "_pack_list": _pack_list, "_nbytes": _nbytes, "frame": FRAME_HEADER.pack,
                                 "_encode_chunked": _encode_parts_generic}
    exec("\n".join(lines) + "\n", namespace)  # noqa: S102 - built from validated identifiers only
    return namespace["encode"]


def _nbytes(value: Buffer) -> int:
    return len(value) if type(value) is bytes else memoryview(value).nbytes


def _pack_list(items: Sequence[Buffer]) -> bytes:
    lengths = [_nbytes(x) for x in items]
    head = _LIST_COUNT.pack(len(items)) + struct.pack("<%dQ" % len(items), *lengths)
    return b"".join([head, *items])


def _unpack_list(view: memoryview) -> List[bytes]:
    if len(view) < 4:
        raise ProtocolError("list field too short")
    (count,) = _LIST_COUNT.unpack_from(view, 0)
    if count > _MAX_LIST_ITEMS or 4 + 8 * count > len(view):
        raise ProtocolError("list field announces %d items in %d bytes" % (count, len(view)))
    lengths = struct.unpack_from("<%dQ" % count, view, 4)
    offset = 4 + 8 * count
    out = []
    for n in lengths:
        end = offset + n
        if end > len(view):
            raise ProtocolError("list item overruns its field")
        out.append(view[offset:end].tobytes() if n < ZERO_COPY_THRESHOLD else view[offset:end])
        offset = end
    if offset != len(view):
        raise ProtocolError("trailing bytes in list field")
    return out


def _make_decoder(spec: "_Spec") -> Any:
    """Generate the decoder of one message type (3× faster than the generic walk below,
    which stays as the reference the tests hold it to): straight-line code, same checks."""
    name = spec.cls.__name__
    fixed = ["f_%s" % n for n, _ in spec.fixed]
    lengths = ["n%d" % i for i in range(len(spec.variable))]
    lines = ["def decode(view, size):",
             "    if size < %d:" % spec.struct.size,
             "        raise ProtocolError(%r)" % ("%s: frame too short" % name),
             "    %s = unpack_from(view, 0)" % ", ".join(["_"] + fixed + lengths + [""]),
             "    offset = %d" % spec.struct.size]
    for i, (field_name, kind) in enumerate(spec.variable):
        lines.append("    end = offset + n%d" % i)
        lines.append("    if end > size:")
        lines.append("        raise ProtocolError(%r)" % ("%s.%s overruns the frame" % (name, field_name)))
        if kind == "bytes" or kind == "chunks":
            lines.append("    f_%s = view[offset:end].tobytes() if n%d < %d else view[offset:end]"
                         % (field_name, i, ZERO_COPY_THRESHOLD))
        elif kind == "str":
            lines.append("    try:")
            lines.append("        f_%s = str(view[offset:end], 'utf-8') if n%d else ''" % (field_name, i))
            lines.append("    except UnicodeDecodeError:")
            lines.append("        raise ProtocolError(%r) from None" % ("%s.%s is not UTF-8" % (name, field_name)))
        else:
            lines.append("    f_%s = _unpack_list(view[offset:end])" % field_name)
        lines.append("    offset = end")
    lines.append("    if offset != size:")
    lines.append("        raise ProtocolError('%s: %%d trailing bytes' %% (size - offset))" % name)
    lines.append("    return cls(%s)" % ", ".join("f_%s" % n for n, _ in spec.cls.FIELDS))
    namespace: Dict[str, Any] = {"unpack_from": spec.struct.unpack_from, "ProtocolError": ProtocolError,
                                 "UnicodeDecodeError": UnicodeDecodeError, "_unpack_list": _unpack_list,
                                 "cls": spec.cls}
    exec("\n".join(lines) + "\n", namespace)  # noqa: S102 - built from validated identifiers only
    return namespace["decode"]


def encode_parts(msg: Message) -> List[Buffer]:
    """Encode ``msg`` as a frame: a list of buffers to write back to back (no big copies)."""
    return msg._encode(msg)


def _encode_parts_generic(msg: Message) -> List[Buffer]:
    """The reference encoder the generated ones must agree with (tests compare them)."""
    spec = _SPECS[msg.TYPE]
    parts: List[Buffer] = []
    lengths = []
    for field_name, kind in spec.variable:
        value = getattr(msg, field_name)
        if kind == "str":
            value = value.encode("utf-8")
        elif kind == "bytes_list":
            value = _pack_list(value)
        if kind == "chunks" and type(value) is list:
            chunks = [chunk for chunk in value if _nbytes(chunk)]
            parts.extend(chunks)
            lengths.append(sum(_nbytes(chunk) for chunk in chunks))
            continue
        parts.append(value)
        lengths.append(_nbytes(value))
    try:
        header = spec.struct.pack(msg.TYPE, *[getattr(msg, n) for n, _ in spec.fixed], *lengths)
    except struct.error as exc:
        raise ProtocolError("cannot encode %s: %s" % (type(msg).__name__, exc)) from None
    total = len(header) + sum(lengths)
    head = FRAME_HEADER.pack(total) + header
    if total < ZERO_COPY_THRESHOLD:
        return [b"".join([head, *parts])]
    return [part for part in (head, *parts) if len(part)]  # an empty buffer would stall sendmsg loops


def encode(msg: Message) -> bytes:
    """Encode ``msg`` as one contiguous frame (length prefix included)."""
    return b"".join(encode_parts(msg))


def _frame_spec(payload: Buffer) -> Tuple[memoryview, "_Spec"]:
    """The frame as a flat byte view, and the declaration of its message type."""
    view = memoryview(payload)
    if not view.c_contiguous:
        raise ProtocolError("frame buffer is not contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if len(view) == 0:
        raise ProtocolError("empty frame")
    spec = _SPECS.get(view[0])
    if spec is None:
        raise ProtocolError("unknown message type %d" % view[0])
    return view, spec


def decode(payload: Buffer) -> Message:
    """Decode one frame payload (without its length prefix) into a message."""
    view, spec = _frame_spec(payload)
    decoder = spec.decoder
    if decoder is None:
        decoder = spec.decoder = _make_decoder(spec)
    return decoder(view, len(view))


def _decode_generic(payload: Buffer) -> Message:
    """The reference decoder the generated ones must agree with (tests compare them)."""
    view, spec = _frame_spec(payload)
    if len(view) < spec.struct.size:
        raise ProtocolError("%s: frame too short" % spec.cls.__name__)
    values = spec.struct.unpack_from(view, 0)
    msg = object.__new__(spec.cls)
    setattr_ = object.__setattr__
    for (field_name, kind), value in zip(spec.fixed, values[1:1 + spec.nfixed]):
        setattr_(msg, field_name, value)
    offset = spec.struct.size
    for (field_name, kind), n in zip(spec.variable, values[1 + spec.nfixed:]):
        end = offset + n
        if end > len(view):
            raise ProtocolError("%s.%s overruns the frame" % (spec.cls.__name__, field_name))
        chunk = view[offset:end]
        if kind == "bytes" or kind == "chunks":
            value: Any = chunk.tobytes() if n < ZERO_COPY_THRESHOLD else chunk
        elif kind == "str":
            try:
                value = str(chunk, "utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("%s.%s is not UTF-8" % (spec.cls.__name__, field_name)) from None
        else:
            value = _unpack_list(chunk)
        setattr_(msg, field_name, value)
        offset = end
    if offset != len(view):
        raise ProtocolError("%s: %d trailing bytes" % (spec.cls.__name__, len(view) - offset))
    return msg


# --- batches ---
#
# Payload of a batch frame: BATCH_TYPE, the messages' type (u8), their count (u32); then one
# column per fixed field (count values each, little-endian, no padding); then the lengths
# of the variable fields, field by field (count u64 each); then their bytes, field by field.
# A batch holds 2 to BATCH_MAX_MESSAGES messages; a single one goes as an ordinary frame.

_BATCH_SIZE: Dict[type, Any] = {}  # batchable message class -> its batch_size function


def _make_batch_size(spec: "_Spec") -> Any:
    """Generate ``batch_size(msg)``: the length of ``msg``'s variable fields + 1 if it may
    join a batch (each is ``bytes`` or ``str`` and at most BATCH_ITEM_LIMIT long), else 0."""
    lines = ["def batch_size(msg):", "    size = 1"]
    for field_name, kind in spec.variable:
        lines.append("    v = msg.%s" % field_name)
        lines.append("    n = len(v)")
        if kind == "str":  # (characters: its UTF-8 is at most 4x as long)
            lines.append("    if n > %d:" % BATCH_ITEM_LIMIT)
        else:
            lines.append("    if type(v) is not bytes or n > %d:" % BATCH_ITEM_LIMIT)
        lines.append("        return 0")
        lines.append("    size += n")
    lines.append("    return size")
    namespace: Dict[str, Any] = {}
    exec("\n".join(lines) + "\n", namespace)  # noqa: S102 - built from validated identifiers only
    return namespace["batch_size"]


def batch_size(msg: Message) -> int:
    """About the bytes ``msg`` adds to a batch (+1), or 0 when it must travel in a frame of its
    own (its type is not batchable, or a variable field is long or not ``bytes`` or ``str``)."""
    size = _BATCH_SIZE.get(type(msg))
    return 0 if size is None else size(msg)


_BATCH_STRUCTS: Dict[Tuple[int, int], struct.Struct] = {}  # (type, count) -> its fixed columns and lengths


def _batch_struct(spec: "_Spec", count: int) -> struct.Struct:
    """The fixed-field columns and the variable fields' lengths of a batch of ``count``
    messages of ``spec``'s type, as one Struct (made once per type and count)."""
    key = (spec.cls.TYPE, count)
    packer = _BATCH_STRUCTS.get(key)
    if packer is None:
        packer = struct.Struct("<" + "".join("%d%s" % (count, _FIXED_KINDS[kind]) for _, kind in spec.fixed)
                               + "%dQ" % (count * len(spec.variable)))
        if len(_BATCH_STRUCTS) < 8192:
            _BATCH_STRUCTS[key] = packer
    return packer


def encode_batch(msgs: Sequence[Message]) -> List[Buffer]:
    """Encode 2 to BATCH_MAX_MESSAGES messages of one batchable type, each accepted by
    :func:`batch_size`, as one frame: what a run of small frames costs per message to frame,
    decode, deliver and queue is paid once per batch instead."""
    spec = _SPECS[msgs[0].TYPE]
    count = len(msgs)
    if not 2 <= count <= BATCH_MAX_MESSAGES or not spec.batchable:
        raise ValueError("a batch holds 2 to %d messages of a batchable type" % BATCH_MAX_MESSAGES)
    if spec.columns is None:
        columns: List[Any] = [[getattr(m, spec.cls.FIELDS[0][0]) for m in msgs]]
    else:
        columns = list(zip(*map(spec.columns, msgs)))
    numbers: List[Any] = []
    for column in columns[:spec.nfixed]:
        numbers.extend(column)
    data: List[Any] = []
    for (field_name, kind), column in zip(spec.variable, columns[spec.nfixed:]):
        if kind == "str":
            column = [text.encode("utf-8") for text in column]
        data.extend(column)
    lengths = list(map(len, data))
    numbers.extend(lengths)
    packer = _batch_struct(spec, count)
    try:
        head = packer.pack(*numbers)
    except struct.error as exc:
        raise ProtocolError("cannot encode %s: %s" % (spec.cls.__name__, exc)) from None
    total = _BATCH_HEAD.size + packer.size + sum(lengths)
    return [b"".join([FRAME_HEADER.pack(total), _BATCH_HEAD.pack(BATCH_TYPE, spec.cls.TYPE, count), head, *data])]


def encode_frames(msgs: Sequence[Message]) -> List[Buffer]:
    """``msgs`` as frames to write back to back, in order, runs of small messages of one
    batchable type batched."""
    out: List[Buffer] = []
    run: List[Message] = []
    for msg in msgs:
        small = batch_size(msg)
        if small and (not run or type(run[0]) is type(msg)) and len(run) < BATCH_MAX_MESSAGES:
            run.append(msg)
            continue
        _flush_run(run, out)
        if small:
            run = [msg]
        else:
            run = []
            out.extend(encode_parts(msg))
    _flush_run(run, out)
    return out


def _flush_run(run: List[Message], out: List[Buffer]) -> None:
    if len(run) == 1:
        out.extend(encode_parts(run[0]))
    elif run:
        out.extend(encode_batch(run))


def is_batch(frame: Buffer) -> bool:
    """The frame payload is a batch (read it with :func:`decode_batch`, not :func:`decode`)."""
    return len(frame) > 0 and frame[0] == BATCH_TYPE


def decode_batch(payload: Buffer) -> List[Message]:
    """The messages of a batch frame's payload; raises :class:`ProtocolError` for anything
    malformed. Every count and length is checked against the frame before it is used."""
    view = memoryview(payload)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    size = len(view)
    if size < _BATCH_HEAD.size or view[0] != BATCH_TYPE:
        raise ProtocolError("not a batch frame")
    _, type_id, count = _BATCH_HEAD.unpack_from(view, 0)
    spec = _SPECS.get(type_id)
    if spec is None or not spec.batchable:
        raise ProtocolError("a batch of message type %d, which is not batchable" % type_id)
    name = spec.cls.__name__
    if not 2 <= count <= BATCH_MAX_MESSAGES or _BATCH_HEAD.size + count * spec.item_min > size:
        raise ProtocolError("batch of %s announces %d messages in %d bytes (2 to %d allowed)"
                            % (name, count, size, BATCH_MAX_MESSAGES))
    pos = _BATCH_HEAD.size
    packer = _batch_struct(spec, count)
    if pos + packer.size > size:
        raise ProtocolError("batch of %s announces %d messages in %d bytes" % (name, count, size))
    numbers = packer.unpack_from(view, pos)
    pos += packer.size
    nfixed = spec.nfixed * count
    lengths = numbers[nfixed:]
    if sum(lengths) != size - pos:
        raise ProtocolError("batch of %s: its fields do not add up to the frame" % name)
    columns: List[Any] = [numbers[start:start + count] for start in range(0, nfixed, count)]
    data = bytes(view[pos:])  # one copy; slices of bytes are bytes
    ends = list(itertools.accumulate(lengths, initial=0))
    items = [data[a:b] for a, b in zip(ends, ends[1:])]  # field by field, message by message
    for index, (field_name, kind) in enumerate(spec.variable):
        column = items[index * count:(index + 1) * count]
        if kind == "str":
            try:
                column = [str(item, "utf-8") if item else "" for item in column]
            except UnicodeDecodeError:
                raise ProtocolError("batch of %s: %s is not UTF-8" % (name, field_name)) from None
        columns.append(column)
    cls = spec.cls
    return [cls(*row) for row in zip(*[columns[i] for i in spec.order])]


def declared_messages() -> List[Type[Message]]:
    return [spec.cls for _, spec in sorted(_SPECS.items())]


def frame_length(header: Buffer, limit: int, offset: int = 0) -> int:
    """Read a frame length prefix and check it against ``limit`` before anything is allocated."""
    if len(header) - offset < FRAME_HEADER.size:
        raise ProtocolError("frame header too short")
    (length,) = FRAME_HEADER.unpack_from(header, offset)
    if length > limit:
        raise ProtocolError("frame of %d bytes exceeds the limit of %d bytes" % (length, limit))
    if length == 0:
        raise ProtocolError("empty frame")
    return length


__all__ = ["Message", "ProtocolError", "declare", "encode", "encode_parts", "decode", "declared_messages",
           "frame_length", "FRAME_HEADER", "BATCH_TYPE", "BATCH_ITEM_LIMIT", "batch_size", "encode_batch",
           "encode_frames", "decode_batch", "is_batch", "BATCH_MAX_MESSAGES"]
