"""The call channel of the codeexec harness: the tests run in one process, the solution in another.

Copied into the sandbox beside the harness as ``wire.py`` (stdlib only, like the harness). The
harness's trusted process runs the tests; the solution runs in a child process, which the tests
reach only through ``Remote`` proxies: a call, an attribute, ``len``, indexing, ``in``, ``bool``,
iteration and ``str`` travel as messages on two pipes (arguments as copies: a list, dict, set or
bytearray the call changed is updated in place), and only *plain data* comes back (None,
bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset); any other
object stays in the child and comes back as another ``Remote``, which compares by identity. So
nothing the solution does (frames, the garbage collector, writing to the pipes, exiting, patching
``AssertionError`` or its own objects' ``__eq__``) reaches the process that judges: the worst a
forged message can say is "this call returned this plain value", as honest code could.

A message is a 4-byte big-endian length and JSON; containers other than lists are tagged objects
(``{"tuple": [...]}``), so a JSON object is never mistaken for a dict.
"""

import builtins
import json
import os
import select
import struct

MAX_MESSAGE = 4 << 20  # bytes: a bigger message is refused (the judge's memory is capped too)
MAX_DEPTH = 200
POLL_SECONDS = 0.05
TAGGED = {tuple: "tuple", set: "set", frozenset: "frozenset", dict: "dict", complex: "complex"}
TAGGED |= {bytes: "bytes", bytearray: "bytearray"}
MUTABLE = (list, dict, set, bytearray)  # arguments a call may change in place
BASES = (bool, int, float, str, list, tuple, dict, set, frozenset, complex, bytes, bytearray)


class Gone(BaseException):
    """The solution's process ended, or broke the channel, while the tests needed it.

    A BaseException, so that a test's ``except Exception`` cannot swallow it.
    """


class Channel:
    """The judge's end: a request pipe, a reply pipe, and the pid of the solution's process."""

    def __init__(self, request_fd: int, reply_fd: int, child: int) -> None:
        self.request_fd, self.reply_fd, self.child = request_fd, reply_fd, child
        self.exit_status: int | None = None  # the child's wait status, once it has ended
        self.gone = False
        self.lent: list = []  # the tests' callables the child may call back, by number

    def receive(self) -> object:
        """The next message from the child; ``Gone`` if it ended or sent garbage."""
        header = self.read_exact(4)
        (size,) = struct.unpack("!I", header)
        if size > MAX_MESSAGE:
            self.fail()
        try:
            return json.loads(self.read_exact(size))
        except (ValueError, RecursionError, MemoryError):
            self.fail()

    def read_exact(self, size: int) -> bytes:
        """``size`` bytes from the reply pipe, watching for the child's end."""
        data = bytearray()
        while len(data) < size:
            readable, _, _ = select.select([self.reply_fd], [], [], POLL_SECONDS)
            if readable:
                chunk = os.read(self.reply_fd, min(size - len(data), 1 << 16))
                if not chunk:
                    self.fail()
                data += chunk
            elif self.ended():
                self.fail()
        return bytes(data)

    def ended(self) -> bool:
        """Whether the child has exited (reaps it once)."""
        if self.exit_status is None:
            pid, status = os.waitpid(self.child, os.WNOHANG)
            if pid:
                self.exit_status = status
        return self.exit_status is not None

    def fail(self):
        """Mark the channel gone and raise ``Gone``."""
        self.gone = True
        raise Gone()

    def ask(self, op: str, target: "Remote", *args, **kwargs) -> object:
        """Apply ``op`` to a remote object in the child; return the result or raise its error.

        While it waits, the child may call back the tests' own functions it was given.
        """
        if self.gone:
            raise Gone()
        message = {"op": op, "ref": target._ref, "args": encode(list(args), self.lend)}
        message["kwargs"] = encode(kwargs, self.lend)
        self.post(message)
        while True:
            reply = self.receive()
            if isinstance(reply, dict) and "callback" in reply:
                self.post(answer(reply, self.lent, self.named, self.lend))
                continue
            try:
                if isinstance(reply, dict) and "value" in reply:
                    if "args" in reply:
                        update_in_place(args, decode(reply["args"], self.named))
                    return decode(reply["value"], self.named)
                if isinstance(reply, dict) and "raise" in reply:
                    name, text = (str(part)[:500] for part in reply["raise"][:2])
                else:
                    raise ValueError(reply)
            except (ValueError, TypeError, KeyError, IndexError, RecursionError, MemoryError):
                self.fail()
            raise remote_error(name, text)

    def post(self, message: dict) -> None:
        """Send a message to the child; ``Gone`` if it cannot take it."""
        try:
            send(self.request_fd, message)
        except OSError:
            self.fail()

    def lend(self, value: object) -> dict:
        """How the judge sends a non-plain argument: the child's own object, or a callable."""
        if isinstance(value, Remote):
            return {"ref": value._ref}
        if callable(value):
            self.lent.append(value)
            return {"lent": len(self.lent) - 1}
        raise TypeError(f"codeexec: a {type(value).__name__} cannot be passed to the solution")

    def named(self, data: dict) -> object:
        """The object a reference names: a proxy for the child's, or a callable lent to it."""
        if "lent" in data:
            return self.lent[int(data["lent"])]
        return self.remote(data["ref"], data.get("type", "object"))

    def remote(self, ref: int, type_name: str) -> "Remote":
        """A proxy for object number ``ref`` in the child."""
        return Remote(self, int(ref), str(type_name)[:100])


class Remote:
    """An object of the solution that stays in its process; compares by identity."""

    __slots__ = ("_channel", "_ref", "_type")

    def __init__(self, channel: Channel, ref: int, type_name: str) -> None:
        self._channel, self._ref, self._type = channel, ref, type_name

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._channel.ask("getattr", self, name)

    def __repr__(self) -> str:
        return f"<{self._type} in the solution's process>"


def _forward(op: str):
    """A method of ``Remote`` that applies ``op`` in the child."""

    def method(self, *args, **kwargs):
        return self._channel.ask(op, self, *args, **kwargs)

    method.__name__ = f"__{op}__"
    return method


for _op in ("call", "len", "getitem", "contains", "bool", "iter", "next", "str"):
    setattr(Remote, f"__{_op}__", _forward(_op))


def remote_error(name: str, text: str) -> BaseException:
    """The exception a remote call raised, as a builtin exception where its name is one."""
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found(text) if text else found()
    return type(name if name.isidentifier() else "RemoteError", (Exception,), {})(text)


def update_in_place(originals: tuple, changed: list) -> None:
    """Give each mutable argument the contents the solution left in its copy."""
    if type(changed) is not list or len(changed) != len(originals):
        raise ValueError("not the arguments sent")
    for original, new in zip(originals, changed, strict=True):
        if type(original) in MUTABLE and type(new) is type(original):
            if type(original) in (list, bytearray):
                original[:] = new
            else:
                original.clear()
                original.update(new)


def answer(request: dict, objects: list, named, other) -> dict:
    """Apply a request (an op on an object, or a call back) to ``objects``; the reply to send."""
    try:
        key = "callback" if "callback" in request else "ref"
        target = objects[int(request[key])]
        args, kwargs = decode(request["args"], named), decode(request["kwargs"], named)
        result = OPS[request.get("op", "call")](target, *args, **kwargs)
        reply = {"value": encode(result, other)}
        if any(type(arg) in MUTABLE for arg in args):  # the caller's copies change with them
            reply["args"] = encode(args, other)
        return reply
    except BaseException as exc:  # the callee's error: the caller re-raises it
        return {"raise": [type(exc).__name__, error_text(exc)]}


def encode(value: object, other, depth: int = 0) -> object:
    """``value`` as JSON-ready plain data; ``other(value)`` encodes anything else."""
    if depth > MAX_DEPTH:
        raise ValueError("codeexec: data nested too deeply")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [encode(item, other, depth + 1) for item in value]
    if kind is dict:
        pairs = [
            [encode(k, other, depth + 1), encode(v, other, depth + 1)] for k, v in value.items()
        ]
        return {"dict": pairs}
    if kind in (tuple, set, frozenset):
        return {TAGGED[kind]: [encode(item, other, depth + 1) for item in value]}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    if kind in (bytes, bytearray):
        return {TAGGED[kind]: value.hex()}
    for base in BASES:  # a subclass (IntEnum, namedtuple, OrderedDict...) goes as its base
        if isinstance(value, base):
            return encode(base(value), other, depth + 1)
    return other(value)


def decode(data: object, remote, depth: int = 0) -> object:
    """Plain data from its JSON form; ``remote(tagged dict)`` gives what a reference names."""
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode(item, remote, depth + 1) for item in data]
    if type(data) is not dict or len(data) not in (1, 2):
        raise ValueError("not a value")
    if "ref" in data or "lent" in data:
        return remote(data)
    ((tag, payload),) = data.items()
    if tag == "dict":
        return {decode(k, remote, depth + 1): decode(v, remote, depth + 1) for k, v in payload}
    if tag == "complex":
        return complex(float(payload[0]), float(payload[1]))
    if tag in ("bytes", "bytearray"):
        return (bytes if tag == "bytes" else bytearray).fromhex(payload)
    kinds = {"tuple": tuple, "set": set, "frozenset": frozenset}
    return kinds[tag](decode(item, remote, depth + 1) for item in payload)


def send(fd: int, message: object) -> None:
    """Write one message: length, then JSON."""
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"codeexec: a message of {len(data)} bytes is too large")
    view = memoryview(struct.pack("!I", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_message(fd: int) -> object:
    """The child's side: the next request, or None once the judge has closed its end."""
    header = _read(fd, 4)
    if len(header) < 4:
        return None
    (size,) = struct.unpack("!I", header)
    return json.loads(_read(fd, size))


def _read(fd: int, size: int) -> bytes:
    data = bytearray()
    while len(data) < size and (chunk := os.read(fd, size - len(data))):
        data += chunk
    return bytes(data)


OPS = {
    "call": lambda target, *a, **kw: target(*a, **kw),
    "getattr": getattr,
    "len": len,
    "getitem": lambda target, key: target[key],
    "contains": lambda target, item: item in target,
    "bool": bool,
    "iter": iter,
    "next": next,
    "str": str,
}


def serve(request_fd: int, reply_fd: int, objects: list) -> None:
    """The child's side: answer requests on ``objects`` (and what they return) until EOF."""
    send_, read, kept = send, read_message, objects

    def keep(value: object) -> dict:
        kept.append(value)
        return {"ref": len(kept) - 1, "type": type(value).__name__}

    def named(data: dict) -> object:
        return Lent(data["lent"]) if "lent" in data else kept[int(data["ref"])]

    class Lent:
        """A function of the tests: calling it asks the judge, serving its requests meanwhile."""

        def __init__(self, number: int) -> None:
            self.number = int(number)

        def __call__(self, *args, **kwargs):
            call = {"callback": self.number, "args": encode(list(args), keep)}
            send_(reply_fd, call | {"kwargs": encode(kwargs, keep)})
            while (message := read(request_fd)) is not None:
                if "op" in message:
                    reply(message)
                elif "value" in message:
                    return decode(message["value"], named)
                else:
                    raise remote_error(*(str(part) for part in message["raise"][:2]))
            raise EOFError("codeexec: the judge ended")

    def reply(request: dict) -> None:
        message = answer(request, kept, named, keep)
        try:
            send_(reply_fd, message)
        except ValueError as exc:  # too large to send
            send_(reply_fd, {"raise": ["ValueError", str(exc)]})

    while (request := read(request_fd)) is not None:
        reply(request)


def error_text(exc: BaseException) -> str:
    """The first line of an exception's message (or a placeholder if it cannot be printed)."""
    try:
        return (str(exc).strip().splitlines() or [""])[0][:500]
    except BaseException:
        return "<unprintable message>"
