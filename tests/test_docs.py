"""The documentation stays true to the code.

* the message table in docs/architecture.rst lists every declared message with its type
  number and fields (and nothing else);
* README.rst has exactly the two set-up commands that .ci/run and users copy, and the
  files it names exist;
* every .rst file under docs/ parses cleanly with docutils (the test extra installs it;
  skipped, saying so, where it is missing: it is not a runtime dependency);
* docs/client.rst mentions every public Client member and every exception class;
* the examples run from any directory, print their result last, and exit 0.
"""

import inspect
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
README = os.path.join(ROOT, "README.rst")
ARCHITECTURE = os.path.join(DOCS, "architecture.rst")
CLIENT_DOC = os.path.join(DOCS, "client.rst")

TABLE_BEGIN = ".. BEGIN MESSAGE TABLE"
TABLE_END = ".. END MESSAGE TABLE"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- (a) the protocol table ----------------------------------------------------------------------

def declared():
    import scaler.protocol.messages  # noqa: F401 - declares the messages
    from scaler.protocol.codec import declared_messages
    return declared_messages()


def parse_message_table(text):
    """Rows of the list-table between the markers: {type: (name, [(field, kind), ...])}."""
    assert TABLE_BEGIN in text and TABLE_END in text, \
        "architecture.rst must keep the message table between %r and %r" % (TABLE_BEGIN, TABLE_END)
    block = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0]
    rows = []
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("* - "):
            rows.append([stripped[4:]])
        elif stripped.startswith("- ") and rows:
            rows[-1].append(stripped[2:])
        elif stripped and rows and not stripped.startswith(":"):
            rows[-1][-1] += " " + stripped  # a cell continued on the next line
    table = {}
    for cells in rows:
        if not cells[0].isdigit():
            continue  # the header row
        assert len(cells) >= 3, "message table row %r needs type, name and fields" % cells
        type_id = int(cells[0])
        assert type_id not in table, "message type %d is listed twice" % type_id
        name = cells[1].strip("` ")
        fields = re.findall(r"(\w+): (\w+)", cells[2])
        table[type_id] = (name, fields)
    return table


def expected_rows(messages):
    """The rows the table should have, to paste into architecture.rst when it drifts."""
    out = []
    for cls in messages:
        fields = ", ".join("``%s: %s``" % field for field in cls.FIELDS) or "(none)"
        out.append("   * - %d\n     - ``%s``\n     - %s\n     - TODO: who sends it and why\n"
                   % (cls.TYPE, cls.__name__, fields))
    return "".join(out)


def test_message_table_lists_every_declared_message():
    messages = declared()
    assert messages, "no messages declared?"
    table = parse_message_table(read(ARCHITECTURE))
    problems = []
    for cls in messages:
        row = table.get(cls.TYPE)
        fields = [tuple(field) for field in cls.FIELDS]
        if row is None:
            problems.append("type %d %s is missing" % (cls.TYPE, cls.__name__))
        elif row[0] != cls.__name__:
            problems.append("type %d is %s in the code but %s in the table" % (cls.TYPE, cls.__name__, row[0]))
        elif [tuple(f) for f in row[1]] != fields:
            problems.append("%s: fields in the code %s, in the table %s" % (cls.__name__, fields, row[1]))
    stale = sorted(set(table) - {cls.TYPE for cls in messages})
    for type_id in stale:
        problems.append("type %d (%s) is in the table but not declared" % (type_id, table[type_id][0]))
    assert not problems, ("docs/architecture.rst message table is out of date:\n  " + "\n  ".join(problems)
                          + "\n\nRows generated from the code:\n" + expected_rows(messages))


def test_message_table_parser_sees_fields_and_empty_rows():
    text = "\n".join([TABLE_BEGIN, ".. list-table::", "   :header-rows: 1", "",
                      "   * - Type", "     - Message", "     - Fields", "     - Sent",
                      "   * - 4", "     - ``Accepted``", "     - (none)", "     - acceptor",
                      "   * - 5", "     - ``Rejected``", "     - ``reason: str``,", "       ``x: u8``", "     - a",
                      TABLE_END])
    assert parse_message_table(text) == {4: ("Accepted", []), 5: ("Rejected", [("reason", "str"), ("x", "u8")])}


# --- (b) the README's set-up commands ------------------------------------------------------------

def bash_blocks(text):
    """(line number of the directive, the block's non-empty content lines) per ``code-block:: bash``."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*\.\. code-block::\s*bash\s*$", line):
            indent = len(line) - len(line.lstrip())
            content = []
            for following in lines[i + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                if following.strip():
                    content.append(following.strip())
            blocks.append((i, content))
    return blocks


def test_readme_has_exactly_two_setup_commands():
    text = read(README)
    lines = text.splitlines()
    blocks = bash_blocks(text)
    assert len(blocks) == 2, "README.rst must have exactly two '.. code-block:: bash' blocks, found %d" % len(blocks)
    for _, content in blocks:
        assert len(content) == 1, "each set-up command must be one copy-pasteable line: %r" % content
    (_, [run_example]), (test_line, [run_tests]) = blocks
    assert "pip install ." in run_example and "examples/simple_client.py" in run_example
    assert "'.[test]'" in run_tests and "-m pytest" in run_tests and "tests/" in run_tests
    before = [line for line in lines[:test_line] if line.strip()]
    assert before and "Run the tests" in before[-1], \
        "the test command must directly follow a line containing 'Run the tests' (.ci/run looks for it)"
    for command in (run_example, run_tests):
        assert command.startswith("python3 -m venv .venv && ")
        assert "\t" not in command and not command.endswith("\\")


def test_readme_and_docs_name_files_that_exist():
    names = set()
    for path in [README] + [os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".rst")]:
        names.update(re.findall(r"\b((?:examples|docs|benchmarks)/[\w./-]+\.(?:py|rst))\b", read(path)))
    assert "examples/simple_client.py" in names
    missing = sorted(name for name in names if not os.path.exists(os.path.join(ROOT, name))
                     and not name.startswith("docs/_build"))
    # Pages of docs/ written by others may not exist yet; everything else must.
    missing = [name for name in missing if not (name.startswith("docs/") and name[5:-4] in OTHERS_PAGES)]
    assert not missing, "README.rst or docs/ name files that do not exist: %s" % missing


OTHERS_PAGES = {"commands", "configuration", "performance", "worker_managers"}


def test_index_toctree_lists_every_page():
    text = read(os.path.join(DOCS, "index.rst"))
    toctree = text.split(".. toctree::", 1)[1]
    entries = []
    for line in toctree.splitlines()[1:]:
        if line.strip() and not line.startswith(" "):
            break
        if line.strip() and not line.strip().startswith(":"):
            entries.append(line.strip())
    pages = sorted(name[:-4] for name in os.listdir(DOCS) if name.endswith(".rst") and name != "index.rst")
    assert sorted(entries) == pages, "docs/index.rst toctree and the pages in docs/ differ"
    assert entries[:3] == ["quickstart", "client", "graphs"]  # the user's path first


# --- (c) every page parses -----------------------------------------------------------------------

SPHINX_DIRECTIVES = ("toctree", "autoclass", "automodule", "autofunction", "automethod", "autoattribute",
                     "autoexception", "autodata", "literalinclude", "versionadded", "versionchanged", "deprecated",
                     "seealso", "glossary", "option", "program", "envvar", "describe", "highlight", "only",
                     "tabularcolumns", "index", "currentmodule", "module", "function", "class", "method",
                     "attribute", "exception", "data", "confval", "py:function", "py:class", "py:method",
                     "py:attribute", "py:exception", "py:data", "py:module", "py:currentmodule", "hlist",
                     "centered", "productionlist", "sectionauthor", "codeauthor")
SPHINX_ROLES = ("doc", "ref", "term", "func", "class", "meth", "mod", "attr", "exc", "data", "obj", "option",
                "envvar", "program", "file", "command", "kbd", "guilabel", "menuselection", "samp", "abbr",
                "download", "any", "numref", "keyword", "const", "py:func", "py:class", "py:meth", "py:mod",
                "py:attr", "py:exc", "py:data", "py:obj", "py:const", "dfn", "makevar", "mimetype", "newsgroup",
                "regexp", "pep", "rfc")


def _register_sphinx_names():
    """Let plain docutils accept Sphinx's own directives and roles (as no-ops)."""
    from docutils import nodes
    from docutils.parsers.rst import Directive, directives, roles

    class AnyOptions(dict):
        def __missing__(self, key):
            return directives.unchanged

    class Ignored(Directive):
        has_content = True
        optional_arguments = 100
        final_argument_whitespace = True
        option_spec = AnyOptions()

        def run(self):
            return []

    def literal_role(name, rawtext, text, lineno, inliner, options=None, content=None):
        return [nodes.literal(rawtext, text)], []

    for name in SPHINX_DIRECTIVES:
        directives.register_directive(name, Ignored)
    for name in SPHINX_ROLES:
        if name not in ("pep", "rfc"):  # docutils has its own
            roles.register_local_role(name, literal_role)


def rst_files():
    return sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".rst")) + [README]


@pytest.mark.parametrize("path", rst_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_rst_parses_without_docutils_warnings(path):
    try:
        import docutils  # noqa: F401
    except ImportError:
        pytest.skip("docutils is not installed: the 'test' extra brings it (pip install '.[test]')")
    import io

    from docutils.core import publish_doctree
    _register_sphinx_names()
    stream = io.StringIO()
    publish_doctree(read(path), source_path=path, settings_overrides={
        "warning_stream": stream, "report_level": 2, "halt_level": 5, "syntax_highlight": "none",
        "file_insertion_enabled": False, "raw_enabled": False, "input_encoding": "utf-8"})
    assert stream.getvalue() == "", "%s does not parse cleanly:\n%s" % (path, stream.getvalue())


# --- the client page covers the API --------------------------------------------------------------

def test_client_doc_mentions_every_public_member_and_exception():
    from scaler.client.client import Client
    from scaler.utility import exceptions
    text = read(CLIENT_DOC)
    members = [name for name, _ in inspect.getmembers(Client) if not name.startswith("_")]
    missing = [name for name in members if not re.search(r"\b%s\b" % re.escape(name), text)]
    assert not missing, "docs/client.rst does not mention Client members %s" % missing
    classes = [name for name, obj in vars(exceptions).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == exceptions.__name__]
    missing = [name for name in classes if name not in text]
    assert not missing, "docs/client.rst does not mention exceptions %s" % missing


# --- the examples run ----------------------------------------------------------------------------
# tests/test_e2e_examples.py runs every example standalone and checks that it leaves no
# process behind; here: the output the README promises, from another directory, and the
# optional scheduler-address argument.

EXAMPLES = [
    ("simple_client.py", r"^5$"),
    ("map_client.py", r"^sum of squares of 0\.\.999 = 332833500; doubles in submission order = \[0, 2, 4, 6\]$"),
    ("send_object_client.py", r"^sum = 1999999000000$"),
]


def run_example(script, args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("SCALER_AUTH_KEY", None)
    env.pop("SCALER_SCHEDULER_ADDRESS", None)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script)] + list(args), cwd=str(cwd),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, "%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
        script, done.returncode, out, done.stderr.decode(errors="replace"))
    return out.strip().splitlines()


def test_simple_example_prints_the_result_last(tmp_path):
    lines = run_example("simple_client.py", [], tmp_path)
    assert lines and lines[-1] == "5", "the README promises that simple_client.py prints 5 last:\n%s" % lines


@pytest.fixture(scope="module")
def scheduler_address():
    from scaler import SchedulerClusterCombo
    cluster = SchedulerClusterCombo(n_workers=2, logging_level="WARNING")
    try:
        yield cluster.get_address()
    finally:
        cluster.shutdown()


@pytest.mark.parametrize("script, last_line", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_uses_a_given_scheduler(tmp_path, scheduler_address, script, last_line):
    lines = run_example(script, [scheduler_address], tmp_path)
    assert lines and re.match(last_line, lines[-1]), "%s: unexpected last line in\n%s" % (script, "\n".join(lines))


# --- the worker manager page covers the webhook API ----------------------------------------------

def test_worker_managers_doc_mentions_every_webhook_action_and_status():
    """docs/worker_managers.rst names every action webhook.py handles and every HTTP status that
    webhook.py can answer with (``_reply(NNN``, or ``HTTP_STATUS`` for a refusal of the manager's)."""
    from scaler.worker_manager.errors import Refusal
    from scaler.worker_manager.webhook import HTTP_STATUS

    assert set(HTTP_STATUS) == set(Refusal), "every reason the manager refuses a request needs an HTTP status"
    webhook = read(os.path.join(ROOT, "scaler", "worker_manager", "webhook.py"))
    actions = set(re.findall(r'action == "(\w+)"', webhook))
    statuses = set(re.findall(r"_reply\((\d{3})\b", webhook)) | {str(status) for status in HTTP_STATUS.values()}
    assert {"get_worker_adapter_info", "start_worker_group", "shutdown_worker_group"} <= actions
    assert {"200", "400", "404", "405", "413", "429"} <= statuses, statuses
    text = read(os.path.join(DOCS, "worker_managers.rst"))
    missing = sorted(a for a in actions if a not in text) + sorted(s for s in statuses if "``%s``" % s not in text)
    assert not missing, "docs/worker_managers.rst does not mention %s" % missing
