"""Running the untrusted child (`child.py`) for a group of items: isolation, limits, watching (trusted).

Isolation (`choose_isolation`, probed once per grading process, named in results.json's staff output):

- `bwrap` (preferred): the child runs under bubblewrap (`bwrap`), a thin layer configured here: its own
  mount namespace holding only a fresh sandbox folder (`/sandbox/code`, read-only: the submission's
  `student_code.py`, the kit's given files, the child harness; `/sandbox/io`, writable: the inputs and the
  outputs), the Python environment and /usr read-only, a private /tmp (tmpfs), new PID, network, IPC and
  UTS namespaces (no network; the grader's processes are invisible; everything dies with the sandbox),
  `--die-with-parent`, `--new-session`, and an unprivileged uid (as root: a dedicated uid per concurrent
  sandbox, `UID_BASE` + slot, that the child drops to before any student code runs; otherwise uid 65534
  in a user namespace). No grader code, reference, hidden
  test or other submission exists inside it.
- `uid` (where bwrap cannot create namespaces, e.g. some containers; root only): the child runs directly
  as a dedicated unprivileged uid, one per concurrent sandbox (`UID_BASE` + slot), in a fresh folder per run
  (root-owned, unpredictable name; only its io and tmp subfolders writable by that uid). The probe checks
  that this uid can run Python and torch and can NOT read the kit's reference; every process of that uid
  is killed after the run.
- `none`: no isolation at all; only when asked for (`--unsafe-no-isolation` or AUTOGRADE_ISOLATION=none).
Without a usable level the grader refuses to grade (`IsolationError`, one line). Student code never runs
as root. AUTOGRADE_ISOLATION=bwrap|uid|none forces a level (tests).

Limits (`Limits`): per phase (interpreter + torch start, `import student_code`, each item, the gaps) a
CPU-time budget (summed over the child's process tree, from /proc) and a wall-clock cap; each group has its
own overall cap, so a hang in one part never costs another part's time. The child sets hard RLIMIT_AS /
CPU / FSIZE / NPROC / CORE on itself before any student code runs. stdout/stderr are drained continuously
(a head and a tail kept). If the child dies or hangs inside an item, that item fails with the reason and a
fresh sandbox (new folder) runs the items after it.
"""
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import torch

from . import outputs, protocol, rubric

KEEP_HEAD = 4000
KEEP_TAIL = 12000
NOBODY = 65534
UID_BASE = int(os.environ.get("AUTOGRADE_UID_BASE", 61000))  # uid mode: UID_BASE .. UID_BASE + UID_SLOTS - 1
UID_SLOTS = 64
SANDBOX = "/sandbox"
TMPFS_BYTES = 256 * 1024 * 1024
SIGNAL_WORDS = {
    signal.SIGSEGV: "crashed with a segmentation fault",
    signal.SIGBUS: "crashed with a bus error",
    signal.SIGABRT: "aborted",
    signal.SIGKILL: "was killed",
    signal.SIGXCPU: "ran out of CPU time",
    signal.SIGXFSZ: "wrote a file larger than the limit",
    signal.SIGFPE: "crashed with a floating-point exception",
    signal.SIGILL: "crashed with an illegal instruction",
}


class IsolationError(RuntimeError):
    """No isolation level is available (or the forced one is not): the grader must not run student code."""


class Limits:
    """Time and memory limits of the sandbox.

    Each phase has a CPU-time budget (measured on the child's process tree from /proc while it runs) and a
    wall-clock cap (`WALL_FACTOR` x budget + `WALL_SLACK_S`) for code that hangs without computing. Every
    budget that covers student code is multiplied by `timeout_scale`. A group's overall wall-clock cap is
    the sum of its phases' caps (`total`): groups never share a deadline.
    """

    WALL_FACTOR = 2.0
    WALL_SLACK_S = 20.0

    def __init__(self, timeout_scale=1.0, mem_mb=None):
        self.scale = float(timeout_scale)
        self.mem_mb = int(mem_mb or os.environ.get("AUTOGRADE_MEM_MB", 8192))

    def item(self, number):
        """CPU-seconds budget of an item."""
        return rubric.BY_NUMBER[number].budget_s * self.scale

    @property
    def startup(self):
        return rubric.STARTUP_S  # no student code runs before torch is imported: not scaled

    @property
    def import_(self):
        return rubric.IMPORT_S * self.scale

    @property
    def gap(self):
        return rubric.GAP_S * max(self.scale, 0.2)

    def wall(self, cpu_budget):
        """Wall-clock cap of a phase with CPU budget `cpu_budget`."""
        return self.WALL_FACTOR * cpu_budget + self.WALL_SLACK_S

    def total(self, items):
        """Wall-clock cap of one child running `items`."""
        return sum(self.wall(b) for b in [self.startup, self.import_] + [self.item(i) for i in items]
                   + [self.gap] * (len(items) + 1))

    def cpu_total(self, items):
        """RLIMIT_CPU of one child (a backstop: the phases are watched individually)."""
        return int(self.startup + self.import_ + sum(self.item(i) + self.gap for i in items) + 60)


# --------------------------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table():
    """`{pid: (ppid, uid, cpu seconds incl. reaped children)}` of every process (from /proc)."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
            uid = os.stat(f"/proc/{name}").st_uid
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        try:
            cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICK  # utime stime cutime cstime
            table[int(name)] = (int(fields[1]), uid, cpu)
        except (IndexError, ValueError):
            continue
    return table


def _descendants(root, table):
    """PIDs below `root` in `table` (not `root` itself)."""
    kids = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _tree_cpu(root):
    """CPU seconds used by `root` and its live descendants (and the children they reaped)."""
    table = _proc_table()
    if root not in table:
        return None
    return sum(table[p][2] for p in [root] + _descendants(root, table) if p in table)


def _kill_tree(root, uid=None):
    """SIGKILL `root`'s descendants and, when `uid` is given (a uid used by this sandbox only), every
    process of that uid."""
    for _ in range(5):
        table = _proc_table()
        victims = set(_descendants(root, table))
        if uid is not None:
            victims.update(p for p, (_, u, _) in table.items() if u == uid)
        victims.discard(os.getpid())
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)


class Supervisor:
    """Process-wide grading state: the isolation level (probed once), the uid slots of the `uid` level,
    and, as a child subreaper (`become_subreaper`), the reaping of escaped descendants."""

    def __init__(self, isolation=None):
        self.lock = threading.Lock()
        self.live = set()
        self.subreaper = False
        self.isolation = isolation  # protocol.Isolation once chosen
        self.binds = None  # bwrap: the Python environment's folders
        self._free_slots = list(range(UID_SLOTS))
        self._locks = {}
        self._slot_cv = threading.Condition(self.lock)

    def become_subreaper(self):
        """Linux only; harmless elsewhere. Orphans of our children get re-parented to this process."""
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_CHILD_SUBREAPER = 36
            self.subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            self.subreaper = False
        return self.subreaper

    def take_uid(self):
        """A uid no other sandbox uses now, in this process or any other grader on this machine (an
        exclusive lock file per uid, held until `give_uid`)."""
        import fcntl

        folder = os.path.join(tempfile.gettempdir(), "autograde-uid-locks")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        while True:
            with self._slot_cv:
                for slot in list(self._free_slots):
                    uid = UID_BASE + slot
                    fd = os.open(os.path.join(folder, str(uid)), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        os.close(fd)
                        continue
                    self._free_slots.remove(slot)
                    self._locks[uid] = fd
                    return uid
                self._slot_cv.wait(timeout=0.5)

    def give_uid(self, uid):
        with self._slot_cv:
            fd = self._locks.pop(uid, None)
            if fd is not None:
                os.close(fd)  # releases the lock
            self._free_slots.append(uid - UID_BASE)
            self._slot_cv.notify()

    def spawn(self, *args, **kwargs):
        with self.lock:
            proc = subprocess.Popen(*args, **kwargs)
            self.live.add(proc.pid)
        return proc

    def forget(self, pid):
        with self.lock:
            self.live.discard(pid)

    def sweep(self):
        """Kill and reap processes re-parented to us that are not children we are still watching (only
        possible as a subreaper: then every such process descends from a submission)."""
        if not self.subreaper:
            return 0
        me, killed = os.getpid(), 0
        for _ in range(50):
            table = _proc_table()
            with self.lock:
                strays = [pid for pid, (ppid, _, _) in table.items() if ppid == me and pid not in self.live]
            if not strays:
                break
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            for pid in strays:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        return killed


# --------------------------------------------------------------------------------------------------------
# isolation
# --------------------------------------------------------------------------------------------------------
def child_python():
    """The interpreter for the children: AUTOGRADE_CHILD_PYTHON or this one (it must import torch)."""
    return os.environ.get("AUTOGRADE_CHILD_PYTHON") or sys.executable


def torch_site():
    """The folder holding the `torch` package this process uses."""
    return os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))


def _env_folders(python):
    """`[(real folder, path inside the sandbox)]`: what `python` needs (its prefixes, torch's site folder),
    asked from the interpreter itself (trusted: the grader's own)."""
    code = ("import sys, json; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
            "sys.base_exec_prefix]))")
    proc = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise IsolationError(f"{python} does not start: {proc.stderr.strip()[-200:]}")
    seen, out = set(), []
    for path in json.loads(proc.stdout) + [torch_site()]:
        for inside in {os.path.abspath(path), os.path.realpath(path)}:
            real = os.path.realpath(path)
            if inside in seen or not os.path.isdir(real) or inside == "/usr" or inside.startswith("/usr/"):
                continue
            seen.add(inside)
            out.append((real, inside))
    exe_dir = os.path.dirname(os.path.abspath(python))
    real_exe = os.path.dirname(os.path.realpath(python))
    for inside, real in ((exe_dir, exe_dir), (real_exe, real_exe)):
        if not any(inside == i or inside.startswith(i + "/") for _, i in out) and not inside.startswith("/usr/"):
            out.append((os.path.realpath(real), inside))
    return out


def bwrap_command(host_base, binds, as_root):
    """The bwrap argument list (before the command) for the sandbox in `host_base` (code/ io/ inside)."""
    cmd = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try"]
    if not as_root:
        cmd += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib32", "/lib64", "/sbin"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        cmd += ["--ro-bind-try", etc, etc]
    # the private /tmp comes before the binds: a bind below /tmp (a virtual environment made by mktemp, as CI
    # does) mounted first would be hidden by the tmpfs
    cmd += ["--size", str(TMPFS_BYTES), "--perms", "1777", "--tmpfs", "/tmp"]
    made = {"/", "/usr", "/tmp", "/proc", "/dev"}
    for _, inside in list(binds) + [(None, SANDBOX + "/code")]:
        parts = inside.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/" + "/".join(parts[:i])
            if parent not in made:
                made.add(parent)
                cmd += ["--perms", "0755", "--dir", parent]  # traversable by the unprivileged uid
    for real, inside in binds:
        cmd += ["--ro-bind", real, inside]
    cmd += ["--ro-bind", os.path.join(host_base, "code"), SANDBOX + "/code",
            "--bind", os.path.join(host_base, "io"), SANDBOX + "/io",
            "--proc", "/proc", "--dev", "/dev", "--chdir", SANDBOX + "/code"]
    return cmd


_PROBE = ("import os, sys\n"
          "if sys.argv[2] != '-':\n"
          "    os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[2]))\n"
          "if sys.argv[3] != '-':\n"
          "    sys.path.append(sys.argv[3])\n"
          "assert os.getuid() != 0 and os.geteuid() != 0\n"
          "for path in sys.argv[1].split(os.pathsep):\n"
          "    try:\n"
          "        open(path, 'rb').close()\n"
          "        print('readable', path)\n"
          "    except OSError:\n"
          "        pass\n"
          "import torch\n"
          "print('torch ok')\n")


def _extra_sys_path(python):
    """torch's site folder when the child interpreter is not this one (AUTOGRADE_CHILD_PYTHON), else None."""
    return torch_site() if os.path.realpath(python) != os.path.realpath(sys.executable) else None


def _probe_bwrap(python, kit_reference, binds):
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (Debian/Ubuntu package bubblewrap)"
    base = make_sandbox({}, b"", NOBODY if os.geteuid() == 0 else None)
    try:
        as_root = os.geteuid() == 0
        cmd = bwrap_command(base, binds, as_root) + [python, "-I", "-B", "-c", _PROBE, kit_reference,
                                                     str(NOBODY) if as_root else "-", _extra_sys_path(python) or "-"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bwrap failed to start ({exc})"
        if proc.returncode != 0 or "torch ok" not in proc.stdout:
            return f"bwrap cannot run the child here: {(proc.stderr or proc.stdout).strip()[-300:]}"
        if "readable" in proc.stdout:
            return "the kit's reference or the grader is visible inside bwrap (refusing)"
        return None
    finally:
        remove_tree(base)


def _probe_uid(python, kit_reference):
    if os.geteuid() != 0:
        return "needs root (to start the child as another uid)"
    uid = UID_BASE
    base = _fresh_base()
    try:
        os.chmod(base, 0o711)
        try:
            proc = subprocess.run([python, "-I", "-B", "-c", _PROBE, kit_reference, "-",
                                   _extra_sys_path(python) or "-"], cwd=base,
                                  capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                                  user=uid, group=uid, extra_groups=[], start_new_session=True,
                                  env={"PATH": "/usr/bin:/bin", "HOME": base})
        except (OSError, subprocess.SubprocessError) as exc:
            return f"uid {uid} cannot start {python} ({exc})"
        if proc.returncode != 0 or "torch ok" not in proc.stdout:
            return f"uid {uid} cannot run {python} with torch: {proc.stderr.strip()[-200:]}"
        if "readable" in proc.stdout:
            shown = proc.stdout.split("readable", 1)[1].split()[0]
            return (f"{shown} is readable by other users (make the kit and the grader private: "
                    f"chmod -R go-rwx on their folders)")
        return None
    finally:
        remove_tree(base)


def _secrets(kit_reference):
    """What the child must not be able to read: the kit's reference and the grader's own files."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.pathsep.join([os.path.abspath(kit_reference), os.path.join(here, "items", "__init__.py"),
                            os.path.join(here, "grade.py")])


def _twice(probe, *args):
    """A probe's verdict, asked again once if it failed (a start can fail under memory pressure)."""
    why = probe(*args)
    if why is not None and "readable" not in why and "not installed" not in why and "needs root" not in why:
        time.sleep(2.0)
        why = probe(*args)
    return why


def choose_isolation(supervisor, kit_reference, python=None, unsafe=False):
    """Probe and fix the isolation level of `supervisor` (once); returns the `protocol.Isolation`.
    Raises `IsolationError` when none is available (or the one forced by AUTOGRADE_ISOLATION is not)."""
    if supervisor.isolation is not None:
        return supervisor.isolation
    python = python or child_python()
    forced = os.environ.get("AUTOGRADE_ISOLATION", "").strip().lower() or None
    if forced is not None and forced not in protocol.ISOLATION_LEVELS:
        raise IsolationError(f"AUTOGRADE_ISOLATION={forced}: choose one of {', '.join(protocol.ISOLATION_LEVELS)}")
    if forced == protocol.ISOLATION_NONE:
        supervisor.isolation = protocol.Isolation(protocol.ISOLATION_NONE,
                                                  "NO ISOLATION (AUTOGRADE_ISOLATION=none; unsafe)")
        return supervisor.isolation
    reasons = []
    if forced in (None, protocol.ISOLATION_BWRAP):
        binds = _env_folders(python)
        why = _twice(_probe_bwrap, python, _secrets(kit_reference), binds)
        if why is None:
            supervisor.binds = binds
            who = f"drops to a uid of its own ({UID_BASE}+slot)" if os.geteuid() == 0 else \
                "uid 65534 in a user namespace"
            supervisor.isolation = protocol.Isolation(
                protocol.ISOLATION_BWRAP, f"bubblewrap: own mount/PID/network namespaces, child {who}")
            return supervisor.isolation
        reasons.append(f"bwrap: {why}")
    if forced in (None, protocol.ISOLATION_UID):
        why = _twice(_probe_uid, python, _secrets(kit_reference))
        if why is None:
            supervisor.isolation = protocol.Isolation(
                protocol.ISOLATION_UID, f"no namespaces; child runs as a dedicated uid ({UID_BASE}+slot)"
                + (f" ({reasons[0]})" if reasons else ""))
            return supervisor.isolation
        reasons.append(f"uid: {why}")
    if unsafe and forced is None:
        supervisor.isolation = protocol.Isolation(
            protocol.ISOLATION_NONE, "NO ISOLATION (--unsafe-no-isolation): " + "; ".join(reasons))
        return supervisor.isolation
    raise IsolationError("cannot isolate student code (" + "; ".join(reasons) + "); install bubblewrap, run "
                         "as root, or pass --unsafe-no-isolation for local development only")


# --------------------------------------------------------------------------------------------------------
# sandbox folders
# --------------------------------------------------------------------------------------------------------
def _fresh_base():
    """A new root-private folder with an unpredictable name in the system temp folder."""
    return tempfile.mkdtemp(prefix="autograde-")


def make_sandbox(files, inputs_bytes, owner_uid):
    """A fresh sandbox folder: `base/code` (files, read-only for the child), `base/io` (inputs; writable by
    `owner_uid` when given), `base/tmp`. Returns `base`."""
    base = _fresh_base()
    os.chmod(base, 0o700 if owner_uid is None else 0o711)
    code, io_dir, tmp = (os.path.join(base, d) for d in ("code", "io", "tmp"))
    os.mkdir(code, 0o755)
    os.mkdir(io_dir, 0o700)
    os.mkdir(tmp, 0o700)
    for name, data in files.items():
        path = os.path.join(code, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
    inputs = os.path.join(io_dir, protocol.INPUTS_FILE)
    with open(inputs, "wb") as f:
        f.write(inputs_bytes)
    os.chmod(inputs, 0o644)
    if owner_uid is not None:
        for d in (io_dir, tmp):
            os.chown(d, owner_uid, owner_uid)
    return base


def remove_tree(path):
    """Remove a sandbox folder. Permissions are only ever changed *inside* `path` (never on the folder
    that holds it); what cannot be removed is left behind."""
    root = os.path.abspath(path)

    def fix(func, p, _exc):
        try:
            parent = os.path.dirname(os.path.abspath(p))
            if parent == root or parent.startswith(root + os.sep):
                os.chmod(parent, 0o700)
            if os.path.abspath(p) != root and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(root, onerror=fix)
    return not os.path.exists(root)


# --------------------------------------------------------------------------------------------------------
# one child
# --------------------------------------------------------------------------------------------------------
class _Capture:
    """Keeps the first `KEEP_HEAD` and last `KEEP_TAIL` bytes of a stream."""

    def __init__(self):
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, data):
        if len(self.head) < KEEP_HEAD:
            take = KEEP_HEAD - len(self.head)
            self.head += data[:take]
            data = data[take:]
        self.tail += data
        if len(self.tail) > KEEP_TAIL:
            self.dropped += len(self.tail) - KEEP_TAIL
            del self.tail[:len(self.tail) - KEEP_TAIL]

    def text(self):
        middle = f"\n... ({self.dropped} bytes dropped) ...\n".encode() if self.dropped else b""
        return (bytes(self.head) + middle + bytes(self.tail)).decode("utf-8", "replace")


def _student_line(stderr_text):
    """`' (last seen in student_code.py line N)'` from a faulthandler/traceback dump, or ''."""
    marker = 'student_code.py", line '
    pos = stderr_text.rfind(marker)
    if pos < 0:
        return ""
    digits = ""
    for ch in stderr_text[pos + len(marker):]:
        if not ch.isdigit():
            break
        digits += ch
    return f" (last seen in student_code.py line {digits})" if digits else ""


def _death(returncode, stderr_text, limits):
    """Why the process ended, in words."""
    if returncode is None:
        return "did not finish"
    if returncode < 0 or returncode > 128:
        sig = -returncode if returncode < 0 else returncode - 128
        words = SIGNAL_WORDS.get(sig, f"was killed by signal {sig}")
        if sig == signal.SIGKILL:
            words += f" (memory limit {limits.mem_mb} MB or time limit)"
        return words + _student_line(stderr_text)
    if "MemoryError" in stderr_text[-3000:]:
        return f"ran out of memory (limit {limits.mem_mb} MB)"
    return f"exited with code {returncode} (sys.exit / os._exit in your code?)" + _student_line(stderr_text)


def _command(isolation, supervisor, python, base, items, record, limits, status_fd, uid, child_args):
    """`(argv, cwd, env, popen kwargs)` of one child."""
    in_bwrap = isolation.level == protocol.ISOLATION_BWRAP
    code = SANDBOX + "/code" if in_bwrap else os.path.join(base, "code")
    io_dir = SANDBOX + "/io" if in_bwrap else os.path.join(base, "io")
    tmp = "/tmp" if in_bwrap else os.path.join(base, "tmp")
    child = [python, "-I", "-B", os.path.join(code, protocol.CHILD_FILE), "--io", io_dir, "--items",
             ",".join(items), "--record", ",".join(i for i in items if i in record) or "-",
             "--status-fd", str(status_fd), "--mem-mb", str(limits.mem_mb), "--cpu-s", str(limits.cpu_total(items))]
    child += list(child_args)
    if _extra_sys_path(python):
        child += ["--sys-path", _extra_sys_path(python)]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "TORCH_HOME": os.path.join(tmp, "torch")}
    kwargs = {}
    if in_bwrap:
        argv = bwrap_command(base, supervisor.binds, os.geteuid() == 0) + ["--clearenv"]
        for k, v in env.items():
            argv += ["--setenv", k, v]
        if os.geteuid() == 0:
            child += ["--drop-uid", str(uid)]
        return argv + ["--"] + child, "/", env, kwargs
    if isolation.level == protocol.ISOLATION_UID:
        kwargs = dict(user=uid, group=uid, extra_groups=[], umask=0o077)
    return child, code, env, kwargs


def _one_run(items, record, python, base, limits, supervisor, isolation, uid, log, child_args):
    """Start one child for `items` in sandbox `base` and watch it. Returns `(state, stderr)`: state has
    imported (bool), import_error, started, done, current, timed_out, why, returncode."""
    read_fd, write_fd = os.pipe()
    argv, cwd, env, kwargs = _command(isolation, supervisor, python, base, items, record, limits, write_fd, uid,
                                      child_args)
    try:
        proc = supervisor.spawn(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True,
                                close_fds=True, **kwargs)
    finally:
        os.close(write_fd)
    state = {"torch": False, "imported": False, "import_error": None, "started": [], "done": [], "current": None,
             "timed_out": None, "why": None, "returncode": None}
    out_cap, err_cap = _Capture(), _Capture()
    status_buf = bytearray()
    sel = selectors.DefaultSelector()
    for f, what in ((proc.stdout, "out"), (proc.stderr, "err")):
        os.set_blocking(f.fileno(), False)
        sel.register(f.fileno(), selectors.EVENT_READ, what)
    os.set_blocking(read_fd, False)
    sel.register(read_fd, selectors.EVENT_READ, "status")
    t0 = time.monotonic()
    overall = t0 + limits.total(items)
    watch = {"phase": "starting Python and torch", "cpu": limits.startup, "t": t0, "cpu0": 0.0, "next": 0.0}

    def cpu_now():
        return _tree_cpu(proc.pid)

    def enter(phase, cpu_budget):
        watch.update(phase=phase, cpu=cpu_budget, t=time.monotonic(), cpu0=cpu_now() or 0.0)

    def handle_status(line):
        parts = line.split(" ", 1)
        word, arg = parts[0], (parts[1] if len(parts) > 1 else "")
        if word == protocol.STATUS_TORCH and watch["phase"].startswith("starting"):
            state["torch"] = True
            log.append(f"torch imported in {time.monotonic() - t0:.1f}s wall")
            enter("importing student_code.py", limits.import_)
        elif word == protocol.STATUS_IMPORTED and state["torch"] and not state["imported"]:
            state["imported"] = True
            enter("between items", limits.gap)
        elif word == protocol.STATUS_IMPORT_ERROR and state["torch"] and not state["imported"]:
            state["import_error"] = arg[:1000]
        elif word == protocol.STATUS_START and arg in items and arg not in state["started"] and state["imported"]:
            state["started"].append(arg)
            state["current"] = arg
            enter(f"running {arg}", limits.item(arg))
        elif word == protocol.STATUS_MEMORY:
            log.append(f"child memory peaks (kB, virtual resident): {arg[:60]}")
        elif word == protocol.STATUS_DONE and arg == state["current"]:
            state["done"].append(arg)
            state["current"] = None
            used = (cpu_now() or 0.0) - watch["cpu0"]
            log.append(f"{arg} done in {time.monotonic() - watch['t']:.1f}s wall, {used:.1f}s CPU")
            enter("between items", limits.gap)

    def expired(now):
        """The reason the current phase is over its budget, or None."""
        if now >= overall:
            return "overall time limit"
        if now - watch["t"] >= limits.wall(watch["cpu"]):
            return "wall-clock limit"
        if now >= watch["next"]:
            watch["next"] = now + 0.25
            used = cpu_now()
            if used is not None and used - watch["cpu0"] >= watch["cpu"]:
                return "CPU-time limit"
        return None

    def pump(timeout):
        for key, _ in sel.select(timeout):
            try:
                data = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fd)
                continue
            if key.data == "out":
                out_cap.feed(data)
            elif key.data == "err":
                err_cap.feed(data)
            else:
                status_buf.extend(data)
                while b"\n" in status_buf:
                    line, _, rest = bytes(status_buf).partition(b"\n")
                    status_buf[:] = rest
                    if len(line) <= 4096:
                        handle_status(line.decode("utf-8", "replace"))
                if len(status_buf) > 65536:
                    del status_buf[:]

    while True:
        if sel.get_map():
            pump(0.1)
        else:
            time.sleep(0.05)
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
        except ChildProcessError:
            break
        now = time.monotonic()
        why = expired(now)
        if why:
            pump(0)  # a last look: the phase may have just ended
            watch["next"] = 0.0
            if expired(time.monotonic()):
                state["timed_out"] = watch["phase"]
                state["why"] = why
                log.append(f"{why} while {watch['phase']} after {now - t0:.1f}s")
                break
    _kill_tree(proc.pid, uid if isolation.level == protocol.ISOLATION_UID else None)
    for kill in (os.killpg, os.kill):
        try:
            kill(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    end = time.monotonic() + 0.5
    while sel.get_map() and time.monotonic() < end:
        pump(0.05)
    for key in list(sel.get_map().values()):
        sel.unregister(key.fd)
    sel.close()
    os.close(read_fd)
    proc.stdout.close()
    proc.stderr.close()
    try:
        _, status, _usage = os.wait4(proc.pid, 0)
        state["returncode"] = proc.returncode = os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        state["returncode"] = proc.wait(timeout=30)
    supervisor.forget(proc.pid)
    if uid is not None and isolation.level == protocol.ISOLATION_UID:
        _kill_tree(proc.pid, uid)  # escaped processes of this sandbox's own uid
    log.append(f"child for {','.join(items)} ended: rc={state['returncode']} after {time.monotonic() - t0:.1f}s")
    return state, err_cap.text()


def run_group(items, inputs_bytes, files, limits, supervisor, record=(), child_args=()):
    """Run the child for `items` (in order) until every item has outputs or a reason; `files`: sandbox
    file name -> bytes; `record`: items whose operators are recorded. Returns a `protocol.GroupOutcome`."""
    isolation = supervisor.isolation
    if isolation is None:
        raise IsolationError("choose_isolation() was not called")
    python = child_python()
    outcome = protocol.GroupOutcome()
    remaining = list(items)
    start_retries = 1  # a child that dies before torch is up (no student code ran: e.g. memory pressure)
    for _attempt in range(len(items) + 2):
        if not remaining:
            break
        # a uid of its own for every concurrent sandbox (uid level, and bwrap started as root): per-uid
        # limits (RLIMIT_NPROC) and file ownership never mix two sandboxes
        own_uid = isolation.level == protocol.ISOLATION_UID or (
            isolation.level == protocol.ISOLATION_BWRAP and os.geteuid() == 0)
        uid = supervisor.take_uid() if own_uid else None
        base = make_sandbox(files, inputs_bytes, uid)
        try:
            state, err_text = _one_run(remaining, set(record), python, base, limits, supervisor, isolation, uid,
                                       outcome.log, child_args)
            outcome.stderr += err_text
            io_fd = os.open(os.path.join(base, "io"), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                for item in remaining:
                    if item in state["done"] or item in state["started"]:
                        obj, why = outputs.load(io_fd, protocol.out_name(item))
                        if obj is not None:
                            outcome.outputs[item] = obj
                        elif item in state["done"]:
                            outcome.errors[item] = f"the grader could not read this item's outputs ({why})"
            finally:
                os.close(io_fd)
        finally:
            if not remove_tree(base):
                outcome.log.append(f"could not remove the sandbox folder {base} (left behind)")
            if uid is not None:
                supervisor.give_uid(uid)
        if not state["torch"] and not state["timed_out"] and start_retries > 0:
            start_retries -= 1
            outcome.log.append(f"sandbox start failure (rc={state['returncode']}), retrying once: "
                               f"{err_text[-300:]}")
            time.sleep(2.0)
            continue
        if not state["imported"]:
            if state["import_error"]:
                reason = f"importing student_code.py failed: {state['import_error']}"
            elif state["timed_out"] == "importing student_code.py":
                reason = (f"importing student_code.py did not finish within its limit ({limits.import_:.0f} s "
                          f"of CPU time, {limits.wall(limits.import_):.0f} s of wall-clock time): code at "
                          f"module level that runs forever?")
            elif not state["torch"]:
                reason = "the grader's sandbox did not start (a grader problem: staff have been told)"
                outcome.log.append(f"sandbox start failure: rc={state['returncode']} stderr: {err_text[-500:]}")
            else:
                reason = ("the process " + _death(state["returncode"], err_text, limits)
                          + " while importing student_code.py")
            for item in remaining:
                outcome.errors.setdefault(item, reason)
            break
        pending = [i for i in remaining if i not in outcome.outputs and i not in outcome.errors]
        if not pending:
            break
        blamed = state["current"] if state["current"] in pending else pending[0]
        if state["timed_out"] and state["current"] == blamed:
            cpu = limits.item(blamed)
            outcome.errors[blamed] = (f"did not finish within its time limit ({cpu:.0f} s of CPU time, "
                                      f"{limits.wall(cpu):.0f} s of wall-clock time): an endless loop, "
                                      f"waiting forever, or far too slow?")
        elif state["timed_out"]:
            outcome.errors[blamed] = f"the process stalled ({state['timed_out']}) before finishing this item"
        else:
            outcome.errors[blamed] = ("the process " + _death(state["returncode"], err_text, limits)
                                      + " while running this item")
        remaining = [i for i in pending if i != blamed]
    for item in items:
        if item not in outcome.outputs:
            outcome.errors.setdefault(item, "no result")
    return outcome
