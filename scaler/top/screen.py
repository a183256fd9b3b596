"""What ``scaler_top`` shows: text lines from a status snapshot. No curses in here.

:func:`render` returns the lines of one screen for a given terminal size, sort column and
connection state, so the layout is tested without a terminal.
"""

import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

MIN_WIDTH = 60
MIN_HEIGHT = 10


class Column(NamedTuple):
    key: str  # the key that sorts by it
    title: str
    width: int
    value: Callable[[Dict[str, Any]], Any]  # sort value
    text: Callable[[Dict[str, Any]], str]
    numeric: bool = True


def human_bytes(value: Optional[float]) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return ("%.0f%s" if unit == "B" else "%.1f%s") % (value, unit)
        value /= 1024
    return "%.1fT" % value  # pragma: no cover


def human_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = "%d:%02d:%02d" % (hours, minutes, secs)
    return "%dd %s" % (days, text) if days else text


def _lag(worker: Dict[str, Any]) -> str:
    age = worker.get("heartbeat_age")
    if age is None:
        return "-"
    return ("(last seen) %.0fs" if age > 5 else "%.1fs") % age


COLUMNS: Tuple[Column, ...] = (
    Column("n", "NAME", 24, lambda w: w["name"], lambda w: w["name"], numeric=False),
    Column("h", "HOST", 15, lambda w: w["host"], lambda w: w["host"], numeric=False),
    Column("p", "PID", 7, lambda w: w["pid"], lambda w: str(w["pid"])),
    Column("c", "CPU%", 6, lambda w: w["processor_cpu"], lambda w: "%.1f" % w["processor_cpu"]),
    Column("m", "MEM", 8, lambda w: w["processor_rss"], lambda w: human_bytes(w["processor_rss"])),
    Column("C", "AGT%", 6, lambda w: w["agent_cpu"], lambda w: "%.1f" % w["agent_cpu"]),
    Column("M", "AGTMEM", 8, lambda w: w["agent_rss"], lambda w: human_bytes(w["agent_rss"])),
    Column("d", "QUEUED", 7, lambda w: w["queued"], lambda w: str(w["queued"])),
    Column("r", "RUN", 4, lambda w: w["running"], lambda w: str(w["running"])),
    Column("o", "DONE", 9, lambda w: w["done"], lambda w: str(w["done"])),
    Column("s", "SUSP", 5, lambda w: w["suspended"], lambda w: str(w["suspended"])),
    Column("l", "LAG", 8, lambda w: w["heartbeat_age"] or 0.0, _lag),
    Column("g", "MANAGER", 16, lambda w: w["manager"], lambda w: w["manager"] or "-", numeric=False),
)
SORT_KEYS = {column.key: column for column in COLUMNS}
DEFAULT_SORT = "c"


class View(NamedTuple):
    sort_key: str = DEFAULT_SORT
    descending: bool = True


def next_view(view: View, key: str) -> View:
    """The view after pressing ``key``: a column's key sorts by it; the same key again reverses."""
    if key not in SORT_KEYS:
        return view
    if key == view.sort_key:
        return View(key, not view.descending)
    return View(key, SORT_KEYS[key].numeric)  # numbers: biggest first; names: A to Z


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "~"


def _cells(values: Sequence[Tuple[Column, str]]) -> str:
    parts = []
    for column, text in values:
        text = _fit(text, column.width)
        parts.append(text.rjust(column.width) if column.numeric else text.ljust(column.width))
    return " ".join(parts)


def render(status: Optional[Dict[str, Any]], width: int, height: int, view: View = View(),
           connection: str = "connected", address: str = "") -> List[str]:
    """The lines of one screen, each at most ``width - 1`` characters, at most ``height`` lines.

    ``connection`` is "connected" or a reason shown as DISCONNECTED; the last snapshot stays
    on screen (dimmed by the caller) while reconnecting.
    """
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        return [_fit("terminal too small (%dx%d): scaler_top needs %dx%d" % (width, height, MIN_WIDTH, MIN_HEIGHT),
                     width - 1)]
    lines: List[str] = []
    state = "connected" if connection == "connected" else "DISCONNECTED (%s) - reconnecting" % connection
    lines.append("[%s] scaler_top %s  %s" % (state, address, time.strftime("%H:%M:%S")))
    if status is None:
        lines.append("waiting for the first status snapshot...")
    else:
        lines.extend(_header(status))
        lines.append("")
        workers = list(status.get("workers", ()))
        column = SORT_KEYS.get(view.sort_key, SORT_KEYS[DEFAULT_SORT])
        workers.sort(key=lambda w: (column.value(w), w["name"]), reverse=view.descending)
        titles = []
        for col in COLUMNS:
            mark = ("v" if view.descending else "^") if col is column else ""
            titles.append((col, col.title + mark))
        lines.append(_cells(titles))
        room = height - len(lines) - 2
        shown = workers[:max(0, room)]
        for worker in shown:
            lines.append(_cells([(col, col.text(worker)) for col in COLUMNS]))
        if len(shown) < len(workers):
            lines.append("... %d more worker(s) (make the terminal taller)" % (len(workers) - len(shown)))
        managers = status.get("managers", ())
        pending = sum(m.get("pending_starts", 0) for m in managers)
        lines = lines[:height - 2]
        lines.append("Total %d manager(s) with %d worker(s)%s" % (len(managers), len(workers),
                                                              ", %d pending" % pending if pending else ""))
    lines = lines[:height - 1]
    keys = " ".join("%s:%s" % (c.key, c.title.lower()) for c in COLUMNS)
    lines.append("sort %s (again: reverse)  q:quit" % keys)
    return [_fit(line, width - 1) for line in lines]


def _header(status: Dict[str, Any]) -> List[str]:
    scheduler = status.get("scheduler", {})
    tasks = status.get("tasks", {})
    totals = status.get("totals", {})
    rates = status.get("rates", {})
    storage = status.get("object_storage", {})
    lines = [
        "scheduler pid %s  cpu %5.1f%%  mem %s  uptime %s  policy %s" % (
            scheduler.get("pid", "-"), scheduler.get("cpu", 0.0), human_bytes(scheduler.get("rss")),
            human_duration(scheduler.get("uptime")), scheduler.get("policy", "")),
        "tasks    %d in scheduler: %d waiting  %d queued  %d on workers (%d running)  %d moving  %d cancelling" % (
            tasks.get("total", 0), tasks.get("waiting", 0), tasks.get("queued", 0), tasks.get("assigned", 0),
            tasks.get("running", 0), tasks.get("moving", 0), tasks.get("cancelling", 0)),
        "totals   submitted %d  finished %d  failed %d  cancelled %d" % (
            totals.get("submitted", 0), totals.get("finished", 0), totals.get("failed", 0),
            totals.get("cancelled", 0)),
        "rates/s  submitted %.1f  finished %.1f  failed %.1f  cancelled %.1f" % (
            rates.get("submitted", 0.0), rates.get("finished", 0.0), rates.get("failed", 0.0),
            rates.get("cancelled", 0.0)),
    ]
    if storage.get("in_process"):
        limit = storage.get("limit") or 0
        lines.append("objects  %d (%s%s)  clients %d" % (
            storage.get("objects", 0), human_bytes(storage.get("bytes")),
            " of %s" % human_bytes(limit) if limit else "", len(status.get("clients", ()))))
    else:
        lines.append("objects  in %s  clients %d" % (storage.get("address", "?"), len(status.get("clients", ()))))
    waiting = status.get("waiting_for_capabilities", ())
    if waiting:
        lines.append("waiting for capabilities no worker has: " + ", ".join(
            "%s (%d)" % (w["capabilities"], w["tasks"]) for w in waiting))
    events = status.get("scaling", {}).get("events", ())
    if events:
        last = events[-1]
        lines.append("scaling  %s %s %s: %s" % (time.strftime("%H:%M:%S", time.localtime(last["time"])),
                                                last["manager"] or "-", last["action"], last["detail"]))
    return lines
