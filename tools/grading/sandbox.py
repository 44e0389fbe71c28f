"""Running the untrusted child (`child.py`) for a group of items, with limits (trusted grading process).

`run_group(items, inputs_bytes, files, limits, python, supervisor)` makes a fresh sandbox directory (the
child's cwd: the submission's `student_code.py`, the kit's given files and the harness), starts
`python -I -B _grading_child.py ...` in a new session with a minimal environment, and watches it:

- time: per phase (interpreter + torch start, `import student_code`, each item, the gaps between them) a
  CPU-time budget and a wall-clock cap (see `Limits`), and an overall cap; on expiry the whole process
  group is killed (SIGKILL);
- memory (RLIMIT_AS), CPU time (RLIMIT_CPU), file size and core dumps: set by the child on itself before
  any student code runs (hard limits, so the submission cannot raise them);
- when the grader runs as root (Gradescope), the child runs as `nobody`, so it can neither write the
  results file, the kit, nor signal the grading process;
- stdout/stderr are drained continuously and only a head and a tail are kept (huge output is harmless);
- outputs are read only as regular files below a size cap, with `torch.load(weights_only=True)`.

If the child dies or hangs inside an item, that item fails with the reason and a new child is started for
the items after it (each restart settles at least one item, so the number of restarts is bounded). If it
never finishes `import student_code`, every item of the group fails with the import's reason.
"""
import io
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import torch

from . import rubric

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
KEEP_HEAD = 4000
KEEP_TAIL = 12000
NOBODY = 65534
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


class Limits:
    """Time and memory limits of the sandbox.

    Each phase (interpreter + torch start, `import student_code`, each item, the gaps between items) has a
    CPU-time budget, measured on the child from /proc while it runs, and a wall-clock cap (a multiple of the
    budget plus slack) for code that hangs without computing (sleep, blocking I/O). Budgets on CPU time keep
    legitimate code from timing out on a loaded machine while an endless loop still ends after its budget.
    Every budget that covers student code is multiplied by `timeout_scale`.
    """

    WALL_FACTOR = 2.0
    WALL_SLACK_S = 20.0

    def __init__(self, timeout_scale=1.0, mem_mb=None, submission_s=None):
        self.scale = float(timeout_scale)
        self.mem_mb = int(mem_mb or os.environ.get("AUTOGRADE_MEM_MB", 8192))
        # wall-clock cap of a whole submission (Gradescope stops an autograder after its own timeout)
        self.submission_s = float(submission_s or os.environ.get("AUTOGRADE_SUBMISSION_S", rubric.SUBMISSION_S))

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


def _cpu_seconds(pid, _tick=os.sysconf("SC_CLK_TCK")):
    """User + system CPU time of process `pid` (all its threads), from /proc; None if unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _tick  # utime, stime (fields 14 and 15)
    except (OSError, IndexError, ValueError):
        return None


class Supervisor:
    """Knows the children alive in this process (several groups run in threads) and, when this process is
    a child subreaper (`become_subreaper`), kills the submission's escaped descendants that were re-parented
    to it (double forks, `setsid`)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.live = set()
        self.subreaper = False
        self._drop = None  # None: not probed yet; else (uid or None, reason)

    def drop_uid(self, python):
        """The uid the children run as: `nobody` when this process is root and `nobody` can run `python`
        and import torch's files (probed once), else None (same user). AUTOGRADE_NO_DROP=1 disables it."""
        with self.lock:
            if self._drop is None:
                self._drop = _probe_drop(python)
            return self._drop[0]

    def disable_drop(self, reason):
        with self.lock:
            self._drop = (None, reason)

    def drop_reason(self):
        return self._drop[1] if self._drop else "not probed"

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
            with self.lock:
                strays = [pid for pid in _children_of(me) if pid not in self.live]
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


def _children_of(ppid):
    """PIDs whose parent is `ppid` (from /proc)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == ppid:
            out.append(int(name))
    return out


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


class GroupOutcome:
    """`outputs[item]`: the loaded dict the child wrote; `errors[item]`: why there is none."""

    def __init__(self):
        self.outputs = {}
        self.errors = {}
        self.stdout = ""
        self.stderr = ""
        self.log = []


def child_python():
    """The interpreter for the children: AUTOGRADE_CHILD_PYTHON or this one."""
    return os.environ.get("AUTOGRADE_CHILD_PYTHON") or sys.executable


def torch_site():
    """The directory holding the `torch` package this process uses (appended to the child's sys.path, so
    another interpreter of the same Python version finds the same packages)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))


_PROBE = ("import sys, importlib.util as u; sys.path.append(sys.argv[1]); s = u.find_spec('torch'); "
          "open(s.origin, 'rb').close(); open(sys.argv[2], 'w').write('ok')")


def _probe_drop(python):
    """`(uid, reason)`: NOBODY if running as root and `nobody` can start `python`, read torch and write a
    file in a folder it owns; else `(None, why not)`."""
    if os.environ.get("AUTOGRADE_NO_DROP") == "1":
        return None, "disabled by AUTOGRADE_NO_DROP=1"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "not running as root"
    folder = tempfile.mkdtemp(prefix="autograde-probe-")
    try:
        os.chmod(folder, 0o700)
        os.chown(folder, NOBODY, NOBODY)
        target = os.path.join(folder, "ok")
        proc = subprocess.run([python, "-I", "-B", "-c", _PROBE, torch_site(), target], cwd=folder,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              user=NOBODY, group=NOBODY, extra_groups=[], timeout=60,
                              env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": folder})
        if proc.returncode == 0 and os.path.isfile(target):
            return NOBODY, "children run as nobody"
        return None, f"nobody cannot run {python} with torch ({proc.stderr.decode(errors='replace')[-200:]})"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"nobody cannot run {python} ({exc})"
    finally:
        _remove_tree(folder)


def _make_sandbox(files, inputs_bytes, uid):
    base = tempfile.mkdtemp(prefix="autograde-")
    work, iodir, tmp = (os.path.join(base, d) for d in ("work", "io", "tmp"))
    for d in (work, iodir, tmp):
        os.mkdir(d, 0o755)
    for name, data in files.items():
        path = os.path.join(work, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
    with open(os.path.join(iodir, "inputs.pt"), "wb") as f:
        f.write(inputs_bytes)
    os.chmod(os.path.join(iodir, "inputs.pt"), 0o644)
    if uid is not None:
        os.chmod(base, 0o711)
        for d in (work, iodir, tmp):
            os.chown(d, uid, uid)
            os.chmod(d, 0o700)
        for name in files:
            os.chown(os.path.join(work, name), uid, uid)
    return base, work, iodir, tmp


def _remove_tree(path):
    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix)


def read_output(iodir_fd, name):
    """Load `name` from the io directory: a regular file (no symlink, FIFO...), at most MAX_OUTPUT_BYTES,
    with `torch.load(weights_only=True)`. Returns `(obj, None)` or `(None, reason)`."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=iodir_fd)
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size > MAX_OUTPUT_BYTES:
            return None, "too large"
        chunks, left = [], MAX_OUTPUT_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > MAX_OUTPUT_BYTES:
        return None, "too large"
    try:
        obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - anything malformed
        return None, f"malformed ({type(exc).__name__})"
    if not isinstance(obj, dict):
        return None, "malformed (not a dict)"
    return obj, None


def _student_line(stderr_text):
    """`' (last at student_code.py line N)'` from a faulthandler/traceback dump, or ''."""
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
    if returncode < 0:
        sig = -returncode
        words = SIGNAL_WORDS.get(sig, f"was killed by signal {sig}")
        if sig == signal.SIGKILL:
            words += f" (memory limit {limits.mem_mb} MB or time limit)"
        return words + _student_line(stderr_text)
    if "MemoryError" in stderr_text[-3000:]:
        return f"ran out of memory (limit {limits.mem_mb} MB)"
    return f"exited with code {returncode} (sys.exit / os._exit in your code?)" + _student_line(stderr_text)


def _one_run(items, python, work, iodir, tmp, limits, supervisor, uid, log, deadline):
    """Start one child for `items` and watch it. Returns `(state, stdout, stderr)` where state has the
    keys: imported (bool), import_error (str|None), started (list), done (list), current (str|None),
    timed_out (phase str|None), returncode."""
    read_fd, write_fd = os.pipe()
    cmd = [python, "-I", "-B", "_grading_child.py", "--io", iodir, "--items", ",".join(items),
           "--status-fd", str(write_fd), "--mem-mb", str(limits.mem_mb), "--sys-path", torch_site(),
           "--cpu-s", str(limits.cpu_total(items))]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": tmp, "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "TORCH_HOME": os.path.join(tmp, "torch")}
    kwargs = {}
    if uid is not None:
        kwargs = dict(user=uid, group=uid, extra_groups=[], umask=0o077)
    try:
        proc = supervisor.spawn(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
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
    overall = min(t0 + limits.total(items), deadline)
    # the current phase: its name, CPU budget, and where its clocks started
    watch = {"phase": "starting Python and torch", "cpu": limits.startup, "t": t0, "cpu0": 0.0}

    def enter(phase, cpu_budget):
        watch.update(phase=phase, cpu=cpu_budget, t=time.monotonic(), cpu0=_cpu_seconds(proc.pid) or 0.0)

    def handle_status(line):
        parts = line.split(" ", 1)
        word, arg = parts[0], (parts[1] if len(parts) > 1 else "")
        if word == "torch" and watch["phase"].startswith("starting"):
            state["torch"] = True
            log.append(f"torch imported in {time.monotonic() - t0:.1f}s wall, {_cpu_seconds(proc.pid)}s CPU")
            enter("importing student_code.py", limits.import_)
        elif word == "imported" and not state["imported"]:
            state["imported"] = True
            enter("loading the inputs", limits.gap)
        elif word == "importerror" and not state["imported"]:
            state["import_error"] = arg[:1000]
        elif word == "start" and arg in items and arg not in state["started"] and state["imported"]:
            state["started"].append(arg)
            state["current"] = arg
            enter(f"running {arg}", limits.item(arg))
        elif word == "memory":
            log.append(f"child memory peaks (kB, virtual resident): {arg[:60]}")
        elif word == "done" and arg == state["current"]:
            state["done"].append(arg)
            state["current"] = None
            used = (_cpu_seconds(proc.pid) or 0.0) - watch["cpu0"]
            log.append(f"{arg} done in {time.monotonic() - watch['t']:.1f}s wall, {used:.1f}s CPU")
            enter("between items", limits.gap)

    def expired(now):
        """The reason the current phase is over its budget, or None."""
        if now >= overall:
            return "overall time limit" if now < deadline else "submission time limit"
        if now - watch["t"] >= limits.wall(watch["cpu"]):
            return "wall-clock limit"
        used = _cpu_seconds(proc.pid)
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
        # read what the child said before judging its clocks: this thread may lag behind the child
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
            if expired(time.monotonic()):
                state["timed_out"] = watch["phase"]
                state["why"] = why
                log.append(f"{why} while {watch['phase']} after {now - t0:.1f}s")
                break
    # kill the whole session (pid == pgid) before reaping, so the group id cannot be reused meanwhile
    for kill in (os.killpg, os.kill):  # the group, and the child itself should it have left the group
        try:
            kill(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    end = time.monotonic() + 0.5
    while sel.get_map() and time.monotonic() < end:  # the rest of the output (bounded wait)
        pump(0.05)
    for key in list(sel.get_map().values()):
        sel.unregister(key.fd)
    sel.close()
    os.close(read_fd)
    proc.stdout.close()
    proc.stderr.close()
    cpu = float("nan")
    try:  # reap it ourselves to get its CPU time (it is dead or SIGKILLed: this returns at once)
        _, status, usage = os.wait4(proc.pid, 0)
        state["returncode"] = proc.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
    except ChildProcessError:
        state["returncode"] = proc.wait(timeout=30)
    supervisor.forget(proc.pid)
    log.append(f"child for {','.join(items)} ended: rc={state['returncode']} after {time.monotonic() - t0:.1f}s "
               f"wall, {cpu:.1f}s CPU")
    return state, out_cap.text(), err_cap.text()


def run_group(items, inputs_bytes, files, limits, python=None, supervisor=None, deadline=None):
    """Run the child for `items` (in order) until every item has outputs or a reason. `files`: sandbox file
    name -> bytes (the submission's student_code.py, the kit's given files, the harness); `deadline`: a
    `time.monotonic()` after which nothing more runs (default: `limits.submission_s` from now)."""
    deadline = deadline or time.monotonic() + limits.submission_s
    python = python or child_python()
    supervisor = supervisor or Supervisor()
    uid = supervisor.drop_uid(python)
    base, work, iodir, tmp = _make_sandbox(files, inputs_bytes, uid)
    outcome = GroupOutcome()
    iodir_fd = os.open(iodir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        remaining = list(items)
        for _attempt in range(len(items) + 1):
            if not remaining:
                break
            state, out_text, err_text = _one_run(remaining, python, work, iodir, tmp, limits, supervisor, uid,
                                                 outcome.log, deadline)
            if uid is not None and not state["torch"] and not state["timed_out"]:
                # the child died before any student code ran: an environment problem of running as nobody
                outcome.log.append(f"child failed to start as nobody; running as this user: {err_text[-300:]}")
                supervisor.disable_drop("the child could not start as nobody")
                _remove_tree(base)
                os.close(iodir_fd)
                uid = None
                base, work, iodir, tmp = _make_sandbox(files, inputs_bytes, uid)
                iodir_fd = os.open(iodir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                state, out_text, err_text = _one_run(remaining, python, work, iodir, tmp, limits, supervisor,
                                                     uid, outcome.log, deadline)
            outcome.stdout += out_text
            outcome.stderr += err_text
            for item in remaining:
                if item in state["done"] or item in state["started"]:
                    obj, why = read_output(iodir_fd, f"out_{item}.pt")
                    if obj is not None:
                        outcome.outputs[item] = obj
                    elif item in state["done"]:
                        outcome.errors[item] = f"the grader could not read this item's outputs ({why})"
            if state["why"] == "submission time limit" or time.monotonic() >= deadline:
                for item in remaining:
                    if item not in outcome.outputs:
                        outcome.errors.setdefault(item, (
                            f"not graded: the grading of the whole submission reached its time limit "
                            f"({limits.submission_s:.0f} s); see the items that did not finish"))
                break
            if not state["imported"]:
                if state["import_error"]:
                    reason = f"importing student_code.py failed: {state['import_error']}"
                elif state["timed_out"] == "importing student_code.py":
                    reason = (f"importing student_code.py did not finish within its limit ({limits.import_:.0f} s "
                              f"of CPU time, {limits.wall(limits.import_):.0f} s of wall-clock time): code at "
                              f"module level that runs forever?")
                elif state["timed_out"]:
                    reason = f"the grader's sandbox did not start within {limits.startup:.0f} s"
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
    finally:
        os.close(iodir_fd)
        _remove_tree(base)
    return outcome
