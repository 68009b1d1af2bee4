"""The sandbox's other side: the process that forks one fresh child per candidate program.

:mod:`minippo.lm.sandbox` (read its docstring first) runs this file as a separate interpreter,
``python -I -S -B sandbox_zygote.py``, and keeps it for the batches that follow. It sets up the
layers that protect everything it will start, imports the modules candidates may use, and then
serves batches: each request holds the programs (compiled by the caller, which runs none of
them), the names of the functions to call and the *arguments* of each case, never the expected
answers. For each candidate it forks a child, a few at a time. The child locks itself down,
runs the candidate's program, calls the function on each case's arguments and writes what came
back, as plain data in a strict JSON form, on a pipe of its own, then exits. This process (the
*zygote*: a clean process that others are forked from, as Android's and Chromium's are) never
runs candidate code; it reads each child's pipe up to a size limit, reaps the child, and passes
the bytes on to the caller, which decodes them, checks them against the expected answers and
enforces every deadline from its own clock.

Layers, each tried once and reported (the ``ready`` reply; :func:`minippo.lm.sandbox.layers`):

* for this process and everything it starts: a **user namespace** (when not root), a **network
  namespace** (no network at all, not even loopback), an **IPC namespace** (what a candidate
  without one of its own makes there ends with the zygote), a **mount namespace** in which
  every mount is **read-only**, **no new privileges** (``PR_SET_NO_NEW_PRIVS``, inherited by
  every child), and a **PID namespace** whose init is the zygote proper: if it dies, the kernel
  ends every candidate with it;
* for each candidate's child, before it runs anything: a **PID namespace** of its own (the
  candidate is its init: when it dies, everything it started dies), an **IPC namespace** of its
  own (shared memory and message queues die with it), the **resource limits**, an
  **unprivileged uid** (``nobody``, when the caller is root), **no capabilities**, a
  **parent-death signal** where there are no PID namespaces, a **system-call filter** (seccomp,
  x86_64: no signals to other processes, no new processes or programs, no file changes, no
  sockets, no System V IPC or message queues, no namespaces or mounts, no tracing), **no file
  access** (a Landlock domain without rules: no file may be opened at all, no process outside
  traced), and a **CPU timer**.

A layer the kernel refuses is reported missing, never faked: a probe child (:func:`probe`)
tries the child layers once and reads back what the kernel says in ``/proc/self/status``;
every candidate's child then sets up exactly the layers that held, and one that cannot exits
with :data:`SETUP_EXIT` instead of running the candidate.

Each child is a fork, and a fork's pages are shared with the zygote until one of them writes:
every page a child touches is copied, and that copying is most of what a candidate costs.
So the zygote prepares everything children need (the restricted builtins, the module copies,
the limits, the C functions) and children run as little Python as they can.

Standard library only; Linux gets every layer, other POSIX systems (macOS) the process per
candidate, the limits they enforce and the uid drop. :mod:`minippo.lm.sandbox` imports this
module for its protocol constants; importing it runs nothing.
"""
from __future__ import annotations

import errno
import gc
import marshal
import os
import resource
import select
import signal
import sys

import _signal  # the C functions behind signal: no enum wrapping, fewer pages touched in a child
from _json import encode_basestring_ascii as json_string  # C, and imported before any uid drop

LINUX = sys.platform.startswith("linux")
if LINUX:
    import ctypes

# The protocol shared with minippo.lm.sandbox, which imports these names.
CPU_EXIT = 124  #: exit code of a candidate whose CPU timer fired
SETUP_EXIT = 125  #: exit code of a child that could not set up a layer the probe had set up
MAX_DEPTH = 32  #: nesting limit of a returned value (lists, tuples and dicts inside each other)
CLAIMS = ("ok", "error", "memory", "exit")  #: the statuses a candidate's message may claim
#: Layers that hold wherever this file runs (no set-up can fail).
ALWAYS = ("restricted builtins", "process per candidate", "CPU timer")
#: Layers of the zygote, inherited by every child, in the order they are tried.
ZYGOTE_LAYERS = ("user namespace", "network namespace", "IPC namespace", "read-only filesystem",
                 "no new privileges", "PID namespace per candidate")
#: Layers each candidate's child sets up, in this order (the IPC namespace while it still has the
#: privilege to make one).
CHILD_LAYERS = ("IPC namespace per candidate", "resource limits", "unprivileged uid", "no capabilities",
                "parent-death signal", "system-call filter", "no file access")

# Linux constants (linux/sched.h, linux/prctl.h, linux/mount.h, linux/capability.h).
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added in Linux 5.12)
# Landlock (linux/landlock.h; the same numbers on every architecture, added in Linux 5.13).
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_RESTRICT_SELF = 444, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MS_PRIVATE = 0x1, 0x2, 1 << 18
CAPABILITY_VERSION_3 = 0x20080522
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
AUDIT_ARCH_X86_64 = 0xC000003E
#: System calls the filter refuses with EPERM (x86_64 numbers, asm/unistd_64.h): signals to other
#: processes; new processes, threads and programs; changes to files, directories and their
#: attributes; sockets; System V IPC and POSIX message queues (objects that outlive a process);
#: namespaces and mounts; tracing other processes; and kernel interfaces a function body never
#: needs. ``open`` and ``openat`` are refused only for writing.
DENIED_SYSCALLS_X86_64 = {
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "pidfd_send_signal": 424, "clone": 56, "clone3": 435, "fork": 57, "vfork": 58, "execve": 59,
    "execveat": 322, "creat": 85, "truncate": 76, "ftruncate": 77, "unlink": 87, "unlinkat": 263,
    "rmdir": 84, "rename": 82, "renameat": 264, "renameat2": 316, "mkdir": 83, "mkdirat": 258,
    "mknod": 133, "mknodat": 259, "link": 86, "linkat": 265, "symlink": 88, "symlinkat": 266,
    "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93,
    "lchown": 94, "fchownat": 260, "utime": 132, "utimes": 235, "utimensat": 280, "futimesat": 261,
    "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
    "fremovexattr": 199, "openat2": 437, "open_by_handle_at": 304, "socket": 41, "socketpair": 53,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "mount_setattr": 442, "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "io_uring_setup": 425, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250,
    "add_key": 248, "request_key": 249, "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64,
    "semop": 65, "semctl": 66, "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
    "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244,
    "mq_getsetattr": 245,
}
OPEN_ARGUMENT_OF_FLAGS_X86_64 = {2: 1, 257: 2}  # open(path, flags), openat(dirfd, path, flags)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class Unavailable(Exception):
    """A layer this system does not offer, or does not need; the message says why, in a few words."""


# --- talking to the caller ---------------------------------------------------------------

def reply(kind: str, index: int = 0, code: int = 0, flag: int = 0, payload: bytes = b"") -> None:
    """One frame to the caller on stdout: a header line ``kind index code flag size``, then the payload."""
    write_all(1, f"{kind} {index} {code} {flag} {len(payload)}\n".encode() + payload)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def next_request(inbox: bytearray):
    """The next request on stdin, ``batch size`` + :mod:`marshal` data (``None`` at end of file).

    Requests come from the caller, which is trusted. ``kill`` lines left over from a finished
    batch are skipped.
    """
    while True:
        newline = inbox.find(b"\n")
        if newline >= 0:
            word, size = inbox[:newline].split()
            if word == b"batch" and len(inbox) >= newline + 1 + int(size):
                data = bytes(inbox[newline + 1:newline + 1 + int(size)])
                del inbox[:newline + 1 + int(size)]
                return marshal.loads(data)
            if word != b"batch":
                del inbox[:newline + 1]
                continue
        select.select([0], [], [])
        chunk = read_available(0)
        if not chunk:
            return None
        inbox += chunk


def read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


# --- system calls Python 3.11 does not wrap ------------------------------------------------

_LIBC: dict = {}


def libc(name: str):
    """A function of the C library, through :mod:`ctypes` (Linux only), looked up once, by the
    zygote, before it forks."""
    if not LINUX:
        raise Unavailable("not Linux")
    if not _LIBC:
        library = ctypes.CDLL(None, use_errno=True)
        for function in ("prctl", "unshare", "setns", "capset", "syscall"):
            _LIBC[function] = getattr(library, function, None)
    if _LIBC[name] is None:
        raise Unavailable(f"no {name}() in the C library")
    return _LIBC[name]


def checked(result: int) -> int:
    """Raise :class:`OSError` for a C call that returned -1 (errno from :mod:`ctypes`)."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def prctl(option: int, value: int) -> None:
    checked(libc("prctl")(option, value, 0, 0, 0))


def unshare(flag: int) -> None:
    checked(libc("unshare")(flag))


def attempt(step, *args) -> str:
    """Run one layer's set-up: ``""`` if it holds, else why not, in a few words."""
    try:
        step(*args)
        return ""
    except (OSError, Unavailable, ValueError, AttributeError) as e:  # AttributeError: no such call here
        if isinstance(e, OSError) and e.errno:
            return errno.errorcode.get(e.errno, str(e.errno))
        return str(e) or type(e).__name__


# --- layers of the zygote (once) -----------------------------------------------------------

def enter_namespaces(disabled: tuple) -> dict[str, str]:
    """Move this process into new namespaces; ``{layer: ""}`` for each that holds, else the reason.

    Each is tried on its own, so a system that refuses one still gets the others. A caller that
    is not root first needs a user namespace, in which it is root with the capabilities to create
    the others; root needs none (its candidates drop to ``nobody``). The PID namespace applies to
    the children of this process: :func:`become_batch_init` forks its init, the zygote proper.
    """
    steps = {"user namespace": (enter_user_namespace,), "network namespace": (unshare, CLONE_NEWNET),
             "IPC namespace": (unshare, CLONE_NEWIPC), "read-only filesystem": (read_only_filesystem,),
             "no new privileges": (prctl, PR_SET_NO_NEW_PRIVS, 1),
             "PID namespace per candidate": (unshare, CLONE_NEWPID)}
    report = {}
    for name, (step, *args) in steps.items():
        if name == "user namespace" and os.geteuid() == 0:
            report[name] = "not used as root: candidates run as nobody"
        else:
            report[name] = "switched off" if name in disabled else attempt(step, *args)
    return report


def enter_user_namespace() -> None:
    """A new user namespace in which this uid and gid are root (``0 <uid> 1``), nothing else mapped."""
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER)
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def read_only_filesystem() -> None:
    """A private mount namespace in which every mount is read-only and ignores set-uid bits.

    ``mount_setattr(2)`` with ``AT_RECURSIVE`` changes the *mounts* of this namespace (copies
    of the caller's), not the filesystems behind them, so nothing outside changes; it is only
    called once the namespace is verifiably new.
    """
    before = os.stat("/proc/self/ns/mnt").st_ino
    unshare(CLONE_NEWNS)
    if os.stat("/proc/self/ns/mnt").st_ino == before:
        raise Unavailable("the mount namespace did not change")

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, MS_PRIVATE, 0)
    checked(libc("syscall")(ctypes.c_long(SYS_MOUNT_SETATTR), AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr),
                            ctypes.sizeof(attr)))


def become_batch_init(devnull: int) -> None:
    """Fork the zygote proper, the first process (init) of the new PID namespace.

    This process only waits for it and exits with its status; if either dies, the kernel ends
    every process in the namespace, every candidate included. Returns in the child.
    """
    pid = os.fork()
    if pid == 0:
        attempt(prctl, PR_SET_PDEATHSIG, signal.SIGKILL)
        return
    for fd in (0, 1, 2):  # the caller sees end-of-file when the zygote proper is gone
        os.dup2(devnull, fd)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def prepare(config: dict, report: dict, devnull: int, root: bool) -> dict:
    """Everything children share, made once: builtins, module copies, ids, C functions, handles.

    The modules candidates may import are imported here and a copy of each one's public names
    made, so that a child's ``import`` costs nothing. A fork shares these objects with every
    child copy-on-write, so whatever a candidate changes (its builtins, a module, a class such
    as ``collections.Counter``) changes in its own process only. ``root``: whether the caller
    is root (outside any user namespace this process may have entered).
    """
    import builtins

    modules = {}
    for name in config["modules"]:
        copy = type(sys)(name)
        vars(copy).update((k, v) for k, v in vars(__import__(name)).items() if not k.startswith("_"))
        modules[name] = copy

    def safe_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or name not in modules:
            raise ImportError(f"import of {name!r} is not allowed in the sandbox")
        return modules[name]

    safe = {name: getattr(builtins, name) for name in config["builtins"] if hasattr(builtins, name)}
    for name, value in vars(builtins).items():
        if isinstance(value, type) and issubclass(value, BaseException):
            safe[name] = value
    safe["__import__"] = safe_import
    context = {"builtins": safe, "root": root, "nobody": nobody_ids(), "devnull": devnull,
               "zygote": os.getpid(), "pid_namespace": None, "capset": None, "required": frozenset(),
               "disabled": config["disabled"], "filter": None, "landlock": "not Linux"}
    if LINUX:  # capset's arguments: a version-3 header for this process, two empty sets of three masks
        context["capset"] = ((ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0), (ctypes.c_uint32 * 6)())
        attempt(libc, "prctl")  # look the C functions up now, before any fork
        context["filter"] = syscall_filter()
        context["landlock"] = landlock_ruleset()
    if not report["PID namespace per candidate"]:
        context["pid_namespace"] = os.open("/proc/self/ns/pid", os.O_RDONLY)
    return context


def nobody_ids() -> tuple[int, int]:
    """``(uid, gid)`` of the user ``nobody`` (65534 where there is no such entry)."""
    try:
        import pwd

        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except (ImportError, KeyError):
        return 65534, 65534


def limits(config: dict) -> list[tuple[int, int]]:
    """``(resource, value)`` for each limit a child sets as its soft and hard limit, never above
    the hard limit it inherits (which it could not raise)."""
    out = []
    for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_FSIZE", 0), ("RLIMIT_NOFILE", 16),
                        ("RLIMIT_NPROC", 0), ("RLIMIT_CPU", config["cpu_limit_s"]),
                        ("RLIMIT_AS", config["memory_bytes"])):
        limit = getattr(resource, name)
        hard = resource.getrlimit(limit)[1]
        out.append((limit, value if hard == resource.RLIM_INFINITY else min(value, hard)))
    return out


def new_pid_namespace(context: dict) -> None:
    """Make this process's next child the init of a fresh PID namespace.

    ``unshare(CLONE_NEWPID)`` works once per process; ``setns`` back into the zygote's own
    namespace first lets it work again for every candidate.
    """
    if context["pid_namespace"] is None:
        raise Unavailable("no PID namespace")
    checked(libc("setns")(context["pid_namespace"], CLONE_NEWPID))
    unshare(CLONE_NEWPID)


# --- layers of each candidate's child --------------------------------------------------------

def new_ipc_namespace(context: dict) -> None:
    """An IPC namespace of the candidate's own: the System V shared memory, semaphores and message
    queues and the POSIX message queues it could make there are invisible to every other
    candidate, and the kernel destroys them when the candidate's last process ends. (In a shared
    namespace a shared-memory segment outlives its creator: a candidate could leave memory behind
    for the whole life of the zygote.)"""
    unshare(CLONE_NEWIPC)


def set_limits(context: dict) -> None:
    """Memory, CPU, file size 0, 16 files, no new processes, no core dumps (soft = hard).

    A limit the system refuses (macOS does not take every ``RLIMIT_AS``) is skipped, so that
    the others still hold; the probe reports which are not in force.
    """
    for limit, value in context["limits"]:
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass


def limits_in_force(context: dict) -> None:
    """Raise :class:`Unavailable` naming the limits that :func:`set_limits` could not set."""
    names = {getattr(resource, n): n for n in dir(resource) if n.startswith("RLIMIT_")}
    missing = [names[limit] for limit, value in context["limits"] if resource.getrlimit(limit) != (value, value)]
    if missing:
        raise Unavailable("not enforced here: " + ", ".join(missing))


def drop_uid(context: dict) -> None:
    """As root: no supplementary groups, gid and uid of ``nobody``, so the limits bind and the
    candidate can neither signal the caller nor write its files (and its capabilities are gone)."""
    if not context["root"]:
        raise Unavailable("the caller is not root; candidates keep its uid")
    uid, gid = context["nobody"]
    os.setgroups([])
    if hasattr(os, "setresuid"):
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    else:  # macOS: as root, setgid and setuid set the real, effective and saved ids
        os.setgid(gid)
        os.setuid(uid)


def drop_capabilities(context: dict) -> None:
    """Empty capability sets: root of a user namespace keeps no powers in it. (When the caller
    is root, the uid drop has emptied them already; the probe checks either way.)"""
    if not context["root"]:
        checked(libc("capset")(*context["capset"]))


def set_parent_death_signal(context: dict) -> None:
    """Without PID namespaces: the child is killed when the zygote dies (``PR_SET_PDEATHSIG``)."""
    if context["pid_namespace"] is not None:
        raise Unavailable("not needed: candidates die with their PID namespaces")
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != context["zygote"]:
        os._exit(SETUP_EXIT)  # the zygote died before the signal was armed


def filter_system_calls(context: dict) -> None:
    """Install the seccomp filter of :func:`syscall_filter` (allowed without privileges once
    no-new-privileges is set)."""
    if context["filter"] is None:
        raise Unavailable(f"no filter for {os.uname().machine} (x86_64 only)")
    checked(libc("prctl")(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(context["filter"][0]), 0, 0))


def forbid_files(context: dict) -> None:
    """A Landlock domain with no rules: from now on this process may open no file or directory at
    all, for reading, writing or executing (what it has open stays open: the message pipe,
    /dev/null); may not trace or read the memory of any process outside the domain (the caller,
    the zygote); and, where the kernel's Landlock is new enough, may neither bind nor connect TCP
    sockets (ABI 4) nor signal a process or reach an abstract Unix socket outside it (ABI 6).
    Needs no privileges, only no-new-privileges, so it holds where namespaces are refused."""
    if isinstance(context["landlock"], str):
        raise Unavailable(context["landlock"])
    attr, size = context["landlock"]
    syscall = libc("syscall")
    fd = checked(syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), 0))
    try:
        checked(syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), fd, 0))
    finally:
        os.close(fd)


def landlock_ruleset():
    """``(attributes, size)`` of the ruleset :func:`forbid_files` asks this kernel for: every
    access right its Landlock ABI knows handled (so refused), or why there is no Landlock."""
    try:
        abi = libc("syscall")(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                              LANDLOCK_CREATE_RULESET_VERSION)
    except Unavailable as e:
        return str(e)
    if abi < 1:
        err = ctypes.get_errno()
        return {errno.ENOSYS: "no Landlock in this kernel (Linux 5.13+)",
                errno.EOPNOTSUPP: "Landlock is switched off in this kernel"}.get(err, errno.errorcode.get(err, "?"))
    file_rights = (1 << 13) - 1  # ABI 1: execute, write, read, read a directory, remove and make anything
    for since, right in ((2, 1 << 13), (3, 1 << 14), (5, 1 << 15)):  # refer, truncate, ioctl on devices
        file_rights |= right if abi >= since else 0

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                    ("scoped", ctypes.c_uint64)]

    tcp, scopes = (0b11 if abi >= 4 else 0), (0b11 if abi >= 6 else 0)  # bind + connect; abstract sockets + signals
    return RulesetAttr(file_rights, tcp, scopes), 8 if abi < 4 else (16 if abi < 6 else 24)


def no_file_opens(context: dict) -> None:
    """The probe's check of :func:`forbid_files`: opening ``/`` for reading must be refused."""
    try:
        fd = os.open("/", os.O_RDONLY)
    except PermissionError:
        return
    os.close(fd)
    raise Unavailable("the kernel still let the probe open /")


CHILD_STEPS = dict(zip(CHILD_LAYERS, (new_ipc_namespace, set_limits, drop_uid, drop_capabilities,
                                      set_parent_death_signal, filter_system_calls, forbid_files)))


def syscall_filter():
    """A seccomp BPF program refusing :data:`DENIED_SYSCALLS_X86_64` and opens for writing, or
    ``None`` off x86_64; ``(sock_fprog, instructions)`` so the instructions outlive the call.

    The program checks the architecture (anything else is killed), refuses the x32 numbers
    (``>= 0x40000000``), compares the number with each refused one, looks at the flags of
    ``open``/``openat``, and lets everything else through: a deny-list, so that Python's own
    calls (memory, reading, the message written on fd 3) never trip it.
    """
    if os.uname().machine != "x86_64":
        return None
    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, ..., BPF_RET|K
    allow, deny, kill = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x80000000  # SECCOMP_RET_*
    code = [(load, 0, 0, 4), (jeq, 0, "kill", AUDIT_ARCH_X86_64), (load, 0, 0, 0), (jge, "deny", 0, 0x40000000)]
    code += [(jeq, "deny", 0, nr) for nr in sorted(DENIED_SYSCALLS_X86_64.values())]
    code += [(jeq, f"open{arg}", 0, nr) for nr, arg in OPEN_ARGUMENT_OF_FLAGS_X86_64.items()]
    code += [(ret, 0, 0, allow)]
    labels = {}
    for arg in sorted(set(OPEN_ARGUMENT_OF_FLAGS_X86_64.values())):
        labels[f"open{arg}"] = len(code)
        code += [(load, 0, 0, 16 + 8 * arg), (jset, "deny", 0, WRITE_FLAGS), (ret, 0, 0, allow)]
    labels["deny"], labels["kill"] = len(code), len(code) + 1
    code += [(ret, 0, 0, deny), (ret, 0, 0, kill)]

    class Instruction(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Instruction))]

    def offset(target, i):
        return target if isinstance(target, int) else labels[target] - i - 1

    instructions = (Instruction * len(code))(*(Instruction(c, offset(t, i), offset(f, i), k)
                                               for i, (c, t, f, k) in enumerate(code)))
    return Program(len(code), instructions), instructions


def isolate(write_fd: int, devnull: int) -> None:
    """Standard streams to /dev/null, the message pipe on fd 3, every other descriptor closed,
    a process group of its own."""
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if write_fd != 3:
        os.dup2(write_fd, 3)
    os.closerange(4, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16))
    os.setpgid(0, 0)


def probe(config: dict, context: dict) -> dict[str, str]:
    """Fork one child that sets up every child layer; return what held, as the kernel reports it.

    The child reads ``/proc/self/status`` (Linux) after its set-up, so that "no capabilities"
    and "no new privileges" are reported because the kernel says so, not because a call
    returned without error.
    """
    had_pid_namespace = context["pid_namespace"] is not None
    pid_namespace = attempt(new_pid_namespace, context) if had_pid_namespace else ""
    if pid_namespace:  # candidates will not get one either
        os.close(context["pid_namespace"])
        context["pid_namespace"] = None
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            isolate(write_fd, context["devnull"])
            report = {}
            for name in CHILD_LAYERS[:CHILD_LAYERS.index("no file access")]:
                report[name] = "switched off" if name in context["disabled"] else attempt(CHILD_STEPS[name], context)
            if not report["resource limits"]:
                report["resource limits"] = attempt(limits_in_force, context)
            report.update(kernel_view(report))  # before the last layer, after which no file opens
            name = "no file access"
            report[name] = "switched off" if name in context["disabled"] else attempt(CHILD_STEPS[name], context)
            if not report[name]:
                report[name] = attempt(no_file_opens, context)
            if had_pid_namespace and not pid_namespace and os.getpid() != 1:
                report["PID namespace per candidate"] = "the child is not its namespace's init"
            write_all(3, "".join(f"{k}\t{v}\n" for k, v in report.items()).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    text = b"".join(iter(lambda: os.read(read_fd, 1 << 16), b"")).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    report = {name: "the probe failed" for name in CHILD_LAYERS}
    report.update(line.split("\t", 1) for line in text.splitlines())
    if pid_namespace:
        report["PID namespace per candidate"] = pid_namespace
    return report


def kernel_view(report: dict) -> dict[str, str]:
    """Corrections from ``/proc/self/status``: capabilities left, or no-new-privileges not set."""
    try:
        with open("/proc/self/status") as f:
            status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    except OSError:
        return {}
    out = {}
    if not report["no capabilities"] and any(int(status.get(k, "0"), 16) for k in ("CapEff", "CapPrm")):
        out["no capabilities"] = "capabilities remain"
    if not report["system-call filter"] and status.get("Seccomp", "0").strip() != "2":
        out["system-call filter"] = "the kernel reports no filter"
    if status.get("NoNewPrivs", "0").strip() != "1":
        out["no new privileges"] = "the kernel reports NoNewPrivs 0"
    return out


# --- the candidate's child --------------------------------------------------------------------

def candidate_main(item: tuple, write_fd: int, config: dict, context: dict) -> None:
    """The forked child of one candidate: lock down, run it, write its message, exit. Never returns."""
    _, code, function_name, calls = item
    exit_code = SETUP_EXIT
    try:
        isolate(write_fd, context["devnull"])
        gc.enable()  # a candidate's own garbage is collected
        for name in context["required"]:
            CHILD_STEPS[name](context)
        _signal.signal(_signal.SIGPROF, cpu_time_is_up)
        _signal.setitimer(_signal.ITIMER_PROF, config["timeout_s"], config["timeout_s"] / 4)
        exit_code = 0
        write_all(3, run_candidate(code, function_name, calls, config, context))
    finally:  # whatever happened (no message is the caller's to score), never return into the zygote's code
        os._exit(exit_code)


def cpu_time_is_up(signum, frame) -> None:
    """SIGPROF handler: the candidate used ``timeout_s`` of CPU time. (Python runs it between
    bytecodes; a candidate stuck inside one C call is ended by the caller's wall-clock deadline.)"""
    os._exit(CPU_EXIT)


def run_candidate(code, function_name: str, calls: list, config: dict, context: dict) -> bytes:
    """Run the program's code object (compiled by the caller) with the restricted builtins (an
    allow-list, and an ``import`` of the allowed modules' copies), call the function on each
    case's arguments, and encode the message ``[status, detail, outputs]`` (:func:`encode_message`)."""
    outputs, status, detail = [], "ok", ""
    try:
        namespace = {"__builtins__": context["builtins"], "__name__": "candidate"}
        try:
            exec(code, namespace)
            function = namespace.get(function_name)
            if not callable(function):
                raise NameError(function_name)
        except (MemoryError, RecursionError):
            raise
        except Exception as e:
            return encode_message("error", type(e).__name__, [], config)
        for args in calls:
            try:
                outputs.append((True, function(*args)))
            except (MemoryError, RecursionError):
                raise
            except Exception as e:
                outputs.append((False, type(e).__name__))
    except (MemoryError, RecursionError) as e:
        status, detail, outputs = "memory", type(e).__name__, []
    except BaseException as e:  # SystemExit, KeyboardInterrupt, ...: trying to stop the run
        status, detail, outputs = "exit", type(e).__name__, []
    return encode_message(status, detail, outputs, config)


# --- plain data, strictly -----------------------------------------------------------------------

def encode_message(status: str, detail: str, outputs: list, config: dict) -> bytes:
    """``[status, detail, [[true, value] | [false, reason], ...]]`` as ASCII JSON.

    A value is plain data (:func:`encode_value`); anything else, or a message over
    ``config["max_message_bytes"]``, makes that case ``[false, "returned <type>"]`` or
    ``[false, "output too large"]``. The caller trusts none of it.
    """
    budget = [config["max_message_bytes"] - 200]
    parts = []
    for ok, value in outputs:
        if ok:
            try:
                pieces = []
                encode_value(value, pieces, budget, 0)
                parts.append("[true," + "".join(pieces) + "]")
                continue
            except (ValueError, RecursionError, MemoryError) as e:
                value = str(e) if isinstance(e, ValueError) else "output too large"
        parts.append("[false," + json_string(str(value)[:80]) + "]")
    return f"[{json_string(status)},{json_string(detail[:80])},[{','.join(parts)}]]".encode("ascii")


def encode_value(value, out: list, budget: list, depth: int) -> None:
    """Append the JSON of ``value`` to ``out``: None, bool, int, float, str as JSON; a list as an
    array; a tuple as ``{"tuple": [...]}``; a dict as ``{"dict": [[key, value], ...]}``.

    Types are checked exactly (a subclass of int is not an int: it could redefine ``==``), no
    method of the value is called, and ``budget[0]`` characters is all it may take.
    """
    kind = type(value)
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    if budget[0] < 0:
        raise ValueError("output too large")
    if value is None or kind is bool:
        text = "null" if value is None else ("true" if value else "false")
    elif kind is int:
        text = int.__repr__(value)  # ValueError past 4300 digits
    elif kind is float:
        text = float.__repr__(value) if value == value and abs(value) != float("inf") else (
            "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity"))
    elif kind is str:
        if len(value) > budget[0]:
            raise ValueError("output too large")
        text = json_string(value)
    elif kind in (list, tuple, dict):
        if 2 * len(value) > budget[0]:  # each element takes at least two characters
            raise ValueError("output too large")
        out.append({list: "[", tuple: '{"tuple":[', dict: '{"dict":['}[kind])
        for n, element in enumerate(value.items() if kind is dict else value):
            if n:
                out.append(",")
            if kind is dict:
                out.append("[")
                encode_value(element[0], out, budget, depth + 1)
                out.append(",")
                encode_value(element[1], out, budget, depth + 1)
                out.append("]")
            else:
                encode_value(element, out, budget, depth + 1)
        out.append("]" if kind is list else "]}")
        budget[0] -= 2
        return
    else:
        raise ValueError(f"returned {kind.__name__}")
    budget[0] -= len(text) + 4
    if budget[0] < 0:
        raise ValueError("output too large")
    out.append(text)


# --- the zygote's loop -------------------------------------------------------------------------

def serve(items: list, config: dict, context: dict, inbox: bytearray) -> None:
    """Fork up to ``config["parallel"]`` candidates at a time; pass each one's message on.

    Replies ``start i`` when candidate ``i`` is forked (the caller starts its deadline then)
    and ``done i code overflow size`` + message when it has exited and been reaped (``code``:
    its exit code, or minus the signal that killed it). A ``kill i`` line on stdin kills
    candidate ``i`` and, through its PID namespace or process group, everything it started.
    A child's exit is noticed through a pidfd (Linux), else by looking every millisecond.
    """
    poller = select.poll()
    poller.register(0, select.POLLIN)
    pending, running, watched = list(reversed(items)), {}, {}
    while pending or running:
        while pending and len(running) < config["parallel"]:
            started = start_candidate(pending.pop(), config, context)
            if started is not None:
                pid, slot = started
                running[pid] = slot
                for fd in (slot["fd"], slot["exit_fd"]):
                    if fd >= 0:
                        watched[fd] = pid
                        poller.register(fd, select.POLLIN)
        blind = any(slot["exit_fd"] < 0 for slot in running.values())
        exited = list(running) if blind else []
        for fd, _ in poller.poll(1 if blind else None):
            if fd == 0:
                inbox += read_available(0)
                obey(inbox, running)
            elif fd in watched and fd == running[watched[fd]]["fd"]:
                collect(running[watched[fd]], config, poller, watched)
            elif fd in watched:  # its pidfd: the child has exited
                exited.append(watched[fd])
        for pid in exited:
            code = reap(pid, context["pid_namespace"] is None)
            if code is not None:
                finish(running.pop(pid), code, config, poller, watched)


def start_candidate(item: tuple, config: dict, context: dict) -> tuple[int, dict] | None:
    """Fork the child of one candidate: ``(pid, slot)``, the slot holding its message pipe."""
    read_fd, write_fd = os.pipe()
    try:
        if context["pid_namespace"] is not None:
            new_pid_namespace(context)
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        reply("done", item[0], SETUP_EXIT)
        return None
    if pid == 0:
        candidate_main(item, write_fd, config, context)
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    reply("start", item[0])
    return pid, {"index": item[0], "fd": read_fd, "exit_fd": exit_fd(pid), "chunks": [], "size": 0,
                 "overflow": 0}


def exit_fd(pid: int) -> int:
    """A descriptor that becomes readable when the child exits (a pidfd), or -1 where there is none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def obey(inbox: bytearray, running: dict) -> None:
    """Carry out the complete ``kill i`` lines at the start of ``inbox`` (a request for the next
    batch, which the caller sends only after this one, stays)."""
    while (newline := inbox.find(b"\n")) >= 0 and inbox.startswith(b"kill "):
        index = int(inbox[5:newline])
        del inbox[:newline + 1]
        for pid, slot in running.items():
            if slot["index"] == index:
                kill_tree(pid)


def kill_tree(pid: int) -> None:
    """SIGKILL a child that has not been reaped (so its pid is still its own) and its process
    group; when the child is its PID namespace's init, the kernel kills everything else in it."""
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def collect(slot: dict, config: dict, poller, watched: dict) -> None:
    """Read what a candidate wrote; at end of file, or past the size limit, stop listening
    (its further writes fail)."""
    chunk = read_available(slot["fd"])
    if chunk and slot["size"] + len(chunk) <= config["max_message_bytes"]:
        slot["chunks"].append(chunk)
        slot["size"] += len(chunk)
        return
    if chunk:
        slot["overflow"] = 1
    unwatch(slot, "fd", poller, watched)


def unwatch(slot: dict, key: str, poller, watched: dict) -> None:
    poller.unregister(slot[key])
    os.close(slot[key])
    del watched[slot[key]]
    slot[key] = -1


def reap(pid: int, kill_group: bool) -> int | None:
    """The exit code of a child that has exited (minus the signal that killed it), once reaped;
    ``None`` while it runs. With ``kill_group`` (no PID namespaces), what is left of its process
    group is killed first.

    ``waitid(..., WNOWAIT)`` looks without reaping, so the pid, and the group id it names, are
    still the child's when the group is killed. (In its own PID namespace a child is reaped only
    after the kernel has ended everything it started.)
    """
    if kill_group and hasattr(os, "waitid"):
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            return None
        kill_tree(pid)
    done, status = os.waitpid(pid, os.WNOHANG)
    if not done:
        return None
    if kill_group:  # without waitid: a group id stays reserved while any member lives
        kill_tree(pid)
    return os.waitstatus_to_exitcode(status)


def finish(slot: dict, code: int, config: dict, poller, watched: dict) -> None:
    """Read the rest of an exited candidate's message, stop watching it, and reply ``done``."""
    while slot["fd"] >= 0:
        collect(slot, config, poller, watched)
    if slot["exit_fd"] >= 0:
        unwatch(slot, "exit_fd", poller, watched)
    reply("done", slot["index"], code, slot["overflow"], b"".join(slot["chunks"]))


def main() -> None:
    """Set up once, report the layers (``ready``, with this process's pid as the caller sees
    it), then serve batches until stdin ends, replying ``idle`` after each."""
    inbox = bytearray()
    setup = next_request(inbox)
    root = os.geteuid() == 0  # before a user namespace makes this process root inside it
    devnull = os.open(os.devnull, os.O_RDWR)
    attempt(prctl, PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the caller
    report = {name: "" for name in ALWAYS}
    report.update(enter_namespaces(setup["disabled"]) if LINUX else {name: "not Linux" for name in ZYGOTE_LAYERS})
    # No same-uid process may trace it or read its memory. (Only now: a process that is not
    # dumpable may not write its own /proc/self/uid_map, which the user namespace needs.)
    attempt(prctl, PR_SET_DUMPABLE, 0)
    if not report["PID namespace per candidate"]:
        become_batch_init(devnull)
    gc.disable()  # the zygote collects between batches, when no child shares its pages
    context = prepare(setup, report, devnull, root)
    context["limits"] = limits({"cpu_limit_s": 1, "memory_bytes": 1 << 30})
    report.update(probe(setup, context))
    context["required"] = tuple(name for name in CHILD_LAYERS if not report[name] or (
        name == "resource limits" and name not in setup["disabled"]))  # whichever limits hold, set them
    caller_view = os.readlink("/proc/self") if os.path.exists("/proc/self") else str(os.getpid())
    reply("ready", int(caller_view), payload="".join(f"{k}\t{v}\n" for k, v in report.items()).encode())
    os.set_blocking(0, False)
    while (request := next_request(inbox)) is not None:
        config, items = request
        context["limits"] = limits(config)
        gc.collect()
        gc.freeze()  # a child's collections skip every object the zygote made (fewer copied pages)
        serve(items, config, context, inbox)
        reply("idle")


if __name__ == "__main__":
    main()
