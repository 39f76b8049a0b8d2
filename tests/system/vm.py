"""The system test's host side: QEMU as the device's hardware, the host as its bootloader
and as the operator's hand that plugs the stick.

Every wait is for a line on a serial port that only one writer in the guest uses (the
agent's console lines, or the guest's journal), never for a line on the boot console, where
systemd's status display redraws over other lines; or for QEMU to exit. Each has a timeout
and fails at once when QEMU exits or the agent reports an unexpected error.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

from screen import erased_lines


class Fail(Exception):
    pass


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


# --- the disk, read as a bootloader reads it -------------------------------------------

def debugfs(disk, request):
    out = subprocess.run(["debugfs", "-R", request, disk], capture_output=True, text=True)
    return out.stdout


def recover(disk):
    """The disk as the next boot finds it. A scenario's last boot ends with QEMU's `quit`, a
    power cut for the guest: what the guest wrote since is in the ext4 journal, which
    debugfs does not read (it then sees stale directories or fails on a checksum). Replay
    the journal, as the kernel's mount would."""
    out = subprocess.run(["e2fsck", "-E", "journal_only", "-y", disk], capture_output=True,
                         text=True)
    if out.returncode >= 4:
        raise Fail(f"{disk}: replaying its journal failed ({out.returncode}): "
                   f"{out.stdout.strip()} {out.stderr.strip()}")


def boot_entries(disk):
    """The BLS entries OSTree wrote, highest `version` first: [default, previous, ...]."""
    recover(disk)
    listing = debugfs(disk, "ls -p /boot/loader/entries")
    names = [f.split("/")[5] for f in listing.splitlines() if f.count("/") >= 6]
    entries = []
    for name in names:
        if not name.endswith(".conf"):
            continue
        text = debugfs(disk, f"cat /boot/loader/entries/{name}")
        entry = {"file": name}
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key:
                entry[key] = value.strip()
        entries.append(entry)
    if not entries:
        raise Fail(f"{disk}: no boot entries under /boot/loader/entries")
    entries.sort(key=lambda e: int(e.get("version", "0")), reverse=True)
    return entries


def extract_boot_files(disk, entry, into):
    """Copy the entry's kernel and initramfs out of the disk image."""
    os.makedirs(into, exist_ok=True)
    paths = {}
    for key in ("linux", "initrd"):
        src = entry[key]
        # /boot is not a separate filesystem here: OSTree's paths are relative to it.
        inside = src if src.startswith("/boot/") else "/boot" + src
        dst = os.path.join(into, key)
        if os.path.exists(dst):
            os.unlink(dst)
        debugfs(disk, f"dump {inside} {dst}")
        if not os.path.exists(dst) or os.path.getsize(dst) == 0:
            raise Fail(f"{disk}: could not read {inside} of {entry['file']}")
        paths[key] = dst
    return paths


# --- the stick -------------------------------------------------------------------------

def make_stick(path, bundle, size_mb):
    """A FAT stick holding `bundle` as /update-<n>/, written with mtools (no host mount)."""
    if os.path.exists(path):
        os.unlink(path)
    sh("mkfs.vfat", "-C", "-n", "USBUPDATE", path, str(size_mb * 1024))
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    sh("mcopy", "-s", "-i", path, bundle, "::/update", env=env)


def read_report(stick):
    """The report the agent left on the stick: (json, log text)."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    names = sh("mdir", "-b", "-i", stick, "::/", env=env).split()
    json_name = [n for n in names if re.search(r"usb-update-report-.*\.json$", n)]
    if not json_name:
        raise Fail(f"{stick}: no report on the stick (files: {names})")
    text = sh("mtype", "-i", stick, json_name[0], env=env)
    log = sh("mtype", "-i", stick, json_name[0][:-5] + ".log", env=env)
    return json.loads(text), log


def site_report(work, stick, name):
    """`usb-update report --json` (the package's binary) on the stick's reports, copied off
    the stick as an operator's computer would see them: (rows, table text)."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    into = os.path.join(work, f"{name}-reports")
    shutil.rmtree(into, ignore_errors=True)
    os.makedirs(into)
    names = sh("mdir", "-b", "-i", stick, "::/", env=env).split()
    for n in names:
        if re.search(r"usb-update-report-[^/]*\.json$", n):
            sh("mcopy", "-i", stick, n, into + "/", env=env)
    binary = os.path.join(work, "package/usr/bin/usb-update")
    rows = subprocess.run([binary, "report", "--json", into], capture_output=True, text=True)
    table = subprocess.run([binary, "report", into], capture_output=True, text=True)
    if rows.returncode != 0 or table.returncode != 0:
        raise Fail(f"usb-update report {into}: exit {rows.returncode}/{table.returncode}: "
                   f"{rows.stderr.strip()} {table.stdout.strip()}")
    return json.loads(rows.stdout), table.stdout


# --- the machine -----------------------------------------------------------------------

AGENT_PREFIX = "usb-update: "
AGENT_ERROR = re.compile(r"^usb-update: error: ")
# In the guest's journal: this boot went wrong, no line a scenario waits for will come.
DOOMED = re.compile(r"Reached target (emergency|rescue)\.target|Kernel panic")
ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[@-~]|.)")
OUT = threading.Lock()


def say(text):
    """Scenarios run side by side: one message at a time, each whole."""
    with OUT:
        print(text, flush=True)


def clean(raw):
    return ESCAPES.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n").replace("\r", "")


class Channel:
    """A serial port of the guest that QEMU writes into a file (`-serial file:`), with one
    writer in the guest: nothing else draws on it and a file loses nothing. Read from the
    position of the last line a wait took."""

    def __init__(self, path):
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self.lines = []
        self.pos = 0
        self._read = 0
        self._partial = b""

    def poll(self, final=False):
        try:
            with open(self.path, "rb") as f:
                f.seek(self._read)
                data = f.read()
        except FileNotFoundError:
            return
        self._read += len(data)
        *whole, self._partial = (self._partial + data).split(b"\n")
        if final and self._partial:
            whole.append(self._partial)
            self._partial = b""
        self.lines += [clean(line) for line in whole]


class Guest:
    """One boot of the device. Three serial ports: ttyS0 is the boot console (kernel,
    systemd's status display, the agent's lines among them: a log for people, never
    waited on), ttyS1 carries only the agent's console lines (the test device's policy
    lists it as a second console), ttyS2 the guest's journal (journald forwards it there:
    the probe's lines, and the agent's log for a failure report)."""

    started_ones = []

    def __init__(self, name, workdir, disk, entry, sticks=(), mem=1536):
        Guest.started_ones.append(self)
        self.name = name
        self.dir = workdir
        self.raw = bytearray()
        self.lines = []
        self.cond = threading.Condition()
        self.qmp_sock = os.path.join(workdir, f"{name}.qmp")
        if os.path.exists(self.qmp_sock):
            os.unlink(self.qmp_sock)
        self.console_path = os.path.join(workdir, f"{name}.console")
        self.agent = Channel(os.path.join(workdir, f"{name}.agent"))
        self.journal = Channel(os.path.join(workdir, f"{name}.journal"))
        self.qemu_log = os.path.join(workdir, f"{name}.qemu.log")
        self._doom_pos = 0
        boot = extract_boot_files(disk, entry, os.path.join(workdir, f"{name}-boot"))
        argv = [
            "qemu-system-x86_64", "-machine", "q35",
            "-accel", os.environ.get("SYSTEM_TEST_ACCEL", "tcg"), "-cpu", "max",
            "-m", str(mem), "-smp", "1", "-display", "none", "-no-reboot", "-nic", "none",
            "-serial", "stdio", "-serial", f"file:{self.agent.path}",
            "-serial", f"file:{self.journal.path}", "-monitor", "none",
            "-qmp", f"unix:{self.qmp_sock},server=on,wait=off",
            "-kernel", boot["linux"], "-initrd", boot["initrd"], "-append", entry["options"],
            "-drive", f"file={disk},if=virtio,format=raw,cache=unsafe",
            "-device", "qemu-xhci,id=xhci",
        ]
        # A stick left in across a reboot is there when the machine starts again.
        for i, stick in enumerate(sticks):
            argv += ["-drive", f"if=none,id=left{i},format=raw,file={stick}",
                     "-device", f"usb-storage,bus=xhci.0,drive=left{i},removable=on,id=leftdev{i}"]
        self.log = open(self.console_path, "w", buffering=1)
        self.log.write(f"### boot {entry.get('title')} ({entry['file']})\n")
        self.started = time.monotonic()
        with open(self.qemu_log, "w") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.qmp = None
        self.sticks = 0

    def _read(self):
        # The raw bytes too: `cat NAME.console.raw` in a terminal shows what an operator saw.
        with open(self.console_path + ".raw", "wb") as raw_log:
            for raw in self.proc.stdout:
                line = clean(raw)
                self.log.write(f"{time.monotonic() - self.started:7.1f} {line}\n")
                raw_log.write(raw)
                with self.cond:
                    self.raw += raw
                    self.lines.append(line)

    def tail(self, n=40):
        with self.cond:
            return "\n".join(self.lines[-n:])

    def fail(self, why):
        return Fail(f"{self.name}: {why}")

    def _poll(self):
        exited = self.proc.poll() is not None
        self.agent.poll(final=exited)
        self.journal.poll(final=exited)
        for line in self.journal.lines[self._doom_pos:]:
            if DOOMED.search(line):
                raise self.fail(f"the boot went wrong: {line}")
        self._doom_pos = len(self.journal.lines)
        return exited

    def wait(self, pattern, timeout, what=None, failing=False, channel=None, anywhere=False):
        """The first line of `channel` (default: the agent's lines) after the last one a
        wait took (`anywhere`: since the boot, for lines of a second agent process that
        can come before or after the ones awaited so far) that matches `pattern`. Fails at
        once when QEMU exits, the boot went wrong, or the agent reports an error that the
        scenario does not expect now (`failing`)."""
        ch = channel or self.agent
        rx = re.compile(pattern)
        what = what or pattern
        deadline = time.monotonic() + timeout
        i = 0 if anywhere else ch.pos
        while True:
            exited = self._poll()
            while i < len(ch.lines):
                line = ch.lines[i]
                i += 1
                if rx.search(line):
                    ch.pos = max(ch.pos, i)
                    say(f"  [{self.name} {time.monotonic() - self.started:6.1f}s] {line.strip()}")
                    return line
                if i > ch.pos and ch is self.agent and not failing and AGENT_ERROR.search(line):
                    raise self.fail(f"the agent reported an error while {what!r} was awaited: "
                                    f"{line}")
            if not anywhere:
                ch.pos = i
            if exited:
                raise self.fail(f"QEMU exited ({self.proc.returncode}) while waiting for "
                                f"{what!r}")
            if time.monotonic() > deadline:
                raise self.fail(f"timed out after {timeout} s waiting for {what!r}")
            time.sleep(0.2)

    def wait_journal(self, pattern, timeout, what=None):
        return self.wait(pattern, timeout, what, channel=self.journal)

    def report(self, n=40, journal_max=200):
        """For a failure: the last `n` boot console lines and the agent's journal (its own
        log and systemd's lines about its units), as the guest's journald forwarded them."""
        self._poll()
        out = [f"--- {self.name}: the last {n} lines of the boot console "
               f"({self.console_path}) ---", self.tail(n)]
        agent = [line for line in self.journal.lines if "usb-update" in line]
        out.append(f"--- {self.name}: the agent's journal ({len(agent)} of the "
                   f"{len(self.journal.lines)} lines of {self.journal.path}) ---")
        if len(agent) > journal_max:
            out.append(f"({len(agent) - journal_max} earlier lines left out)")
        out += agent[-journal_max:]
        with open(self.qemu_log, errors="replace") as f:
            qemu = f.read().strip()
        if qemu:
            out += [f"--- {self.name}: QEMU's stderr ---", qemu]
        return "\n".join(out)

    def check_console(self):
        """What an operator's terminal shows of the boot console after this boot: no line
        of the agent's erased or overwritten after it was written (systemd's status display
        redraws in place at boot and at shutdown)."""
        self.reader.join(10)
        with self.cond:
            raw = bytes(self.raw)
        erased = erased_lines(raw, AGENT_PREFIX)
        if erased:
            raise self.fail(f"the boot console erased {len(erased)} line(s) of the agent after "
                            f"they were written ({self.console_path}): {erased}")

    def wait_exit(self, timeout):
        """The guest rebooted or powered off (-no-reboot ends QEMU either way)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.fail(f"did not reboot within {timeout} s")
        self._poll()
        self.check_console()
        say(f"  [{self.name} {time.monotonic() - self.started:6.1f}s] QEMU exited: the guest "
            f"rebooted")

    # QMP: one command at a time; events in between are skipped.
    def _qmp_connect(self):
        deadline = time.monotonic() + 30
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.qmp_sock)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise self.fail("no QMP socket")
                time.sleep(0.2)
        self.qmp = s.makefile("rw")
        json.loads(self.qmp.readline())
        self.command("qmp_capabilities")

    def command_reply(self, execute, **args):
        if self.qmp is None:
            self._qmp_connect()
        self.qmp.write(json.dumps({"execute": execute, "arguments": args}) + "\n")
        self.qmp.flush()
        while True:
            reply = json.loads(self.qmp.readline())
            if "return" in reply or "error" in reply:
                return reply

    def command(self, execute, **args):
        reply = self.command_reply(execute, **args)
        if "error" in reply:
            raise self.fail(f"QMP {execute}: {reply['error']}")
        return reply["return"]

    def left_in(self, i=0):
        """What plug() returns, for a stick the machine started with."""
        return (None, f"leftdev{i}")

    def plug(self, stick):
        """The operator plugs a USB stick: a usb-storage device on the xHCI bus."""
        self.sticks += 1
        node, dev = f"stick{self.sticks}", f"stickdev{self.sticks}"
        self.command("blockdev-add", **{"node-name": node, "driver": "raw",
                                        "file": {"driver": "file", "filename": stick}})
        self.command("device_add", driver="usb-storage", bus="xhci.0", drive=node,
                     removable=True, id=dev)
        return node, dev

    def unplug(self, plugged):
        """The operator pulls the stick. device_del is asynchronous: the drive is free (or,
        for a stick the machine started with, gone) only once the guest let go of it."""
        node, dev = plugged
        self.command("device_del", id=dev)
        deadline = time.monotonic() + 30
        while True:
            if node:
                reply = self.command_reply("blockdev-del", **{"node-name": node})
                if "return" in reply:
                    return
                if "in use" not in reply["error"]["desc"]:
                    raise self.fail(f"QMP blockdev-del {node}: {reply['error']}")
            elif dev.replace("dev", "") not in [b["device"] for b in self.command("query-block")]:
                return
            if time.monotonic() > deadline:
                raise self.fail(f"{dev} still there 30 s after device_del")
            time.sleep(0.2)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def quit(self):
        """The end of a scenario's last boot: QEMU stops, then the console is checked."""
        if self.proc.poll() is None:
            try:
                self.command("quit")
            except (Fail, OSError, ValueError):
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._poll()
        self.check_console()
