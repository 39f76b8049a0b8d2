"""The system test's scenarios: python3 tests/system/scenarios.py WORK [NAME...]

WORK holds what tests/system/build-image made (disk.raw, bundle, bundle-big). Each scenario
starts from its own copy of disk.raw (the same device every time) and ends with checks of
the console, the disk's boot entries and the report on the stick.
"""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vm import Fail, Guest, boot_entries, make_stick, read_report  # noqa: E402

BOOT = 480      # a cold boot to the probe's last line under TCG: 90 s idle, 175 s on a busy host
INSTALL = 600   # stick plugged -> the agent's reboot
FINALIZE = 600  # boot -> finalize done (dockerd, docker-compose v1 and the settle time)

AGENT = r"usb-update: "


def check(cond, why):
    if not cond:
        raise Fail(why)


def fresh_disk(work, name):
    disk = os.path.join(work, f"{name}.raw")
    subprocess.run(["cp", "--sparse=always", os.path.join(work, "disk.raw"), disk], check=True)
    return disk


def boot(work, name, disk, which, sticks=()):
    """Play the bootloader: boot the default entry (which=0) or the previous one (1)."""
    entries = boot_entries(disk)
    check(len(entries) > which, f"{disk}: no entry #{which} in {[e['file'] for e in entries]}")
    entry = entries[which]
    print(f"  [{name} bootloader] {'default' if which == 0 else 'previous'} entry {entry['file']}: "
          f"{entry.get('title')} ({entry['options'].split('ostree=')[-1].split()[0]})", flush=True)
    return Guest(name, work, disk, entry, sticks)


def booted(g, version):
    g.wait(r"system-test: running version", BOOT, "the probe after boot")
    line = g.lines[g.pos - 1]
    check(line.strip().endswith(f"version {version}"), f"expected version {version}: {line!r}")
    g.wait(r"system-test: probe done", 60)


def install_and_reboot(g, stick):
    """Plug the stick; the agent installs and reboots by itself."""
    plugged = g.plug(stick)
    g.wait(AGENT + r"stick .* inserted: do not remove it", 120, "the agent seeing the stick")
    g.wait(AGENT + r"verifying and installing the update", 120)
    g.wait(AGENT + r"installed: ", INSTALL, "the install's result")
    g.wait(AGENT + r"the stick can be removed", 60)
    g.wait(AGENT + r"rebooting to finish the update", 60)
    g.wait_exit(120)
    return plugged


def happy(work):
    """Plug a stick, walk away: install, reboot, finalize, the app runs, the report says so."""
    disk = fresh_disk(work, "happy")
    stick = os.path.join(work, "happy-stick.img")
    make_stick(stick, os.path.join(work, "bundle"), 512)
    g = boot(work, "happy-1", disk, 0)
    booted(g, 1)
    install_and_reboot(g, stick)
    entries = boot_entries(disk)
    check(len(entries) == 2, f"two deployments after the install: {entries}")
    # The stick stays in: the operator walked away.
    g = boot(work, "happy-2", disk, 0, sticks=[stick])
    g.wait(AGENT + r"finishing the update started before the reboot", FINALIZE)
    g.wait(AGENT + r"updated to ", FINALIZE, "finalize's success")
    booted(g, 2)
    apps = [l for l in g.lines if "system-test: app " in l]
    check(any("app-01" in l and " Up " in l for l in apps), f"app-01 is not running: {apps}")
    g.quit()
    report, log = read_report(stick)
    print(f"  [stick] report: exit {report['exit_code']}, {report['before']} -> "
          f"{report['after']}: {report['result']}", flush=True)
    check(report["exit_code"] == 100, f"report: {report}")
    check((report["after"] or "").startswith("intel-corei7-64-lmp-2"), f"report: {report}")
    check("installed: " in log, f"report log: {log}")


def rollback(work):
    """The bootloader falls back to the previous entry after the agent's reboot: finalize
    rolls back, and the same stick plugged again is refused, not installed again."""
    disk = fresh_disk(work, "rollback")
    stick = os.path.join(work, "rollback-stick.img")
    make_stick(stick, os.path.join(work, "bundle"), 512)
    g = boot(work, "rollback-1", disk, 0)
    booted(g, 1)
    install_and_reboot(g, stick)
    # As a bootloader does after the new entry's boot attempts ran out.
    g = boot(work, "rollback-2", disk, 1, sticks=[stick])
    g.wait(AGENT + r"finishing the update started before the reboot", FINALIZE)
    g.wait(AGENT + r"the device booted \w+ instead of intel-corei7-64-lmp-2: bootloader rollback",
           FINALIZE, "finalize's rollback")
    booted(g, 1)
    # The operator takes the stick out and puts it in again.
    g.unplug(g.left_in())
    plugged = g.plug(stick)
    g.wait(AGENT + r"stick .* inserted: do not remove it", 120, "the agent seeing the stick again")
    g.wait(AGENT + r"error: ", INSTALL, "the refusal")
    line = g.lines[g.pos - 1]
    check("failed" in line, f"the refusal should say the target failed before: {line!r}")
    g.wait(AGENT + r"the stick can be removed", 60)
    g.unplug(plugged)
    g.quit()
    report, log = read_report(stick)
    print(f"  [stick] report: exit {report['exit_code']}: {report['result']}; {report['error']}",
          flush=True)
    check(report["exit_code"] == 103, f"report: {report}")
    entries = boot_entries(disk)
    check(len(entries) == 1, f"one deployment after the rollback: {[e['file'] for e in entries]}")


def pull(work):
    """The stick pulled in the middle of the copy: the error shows, nothing changes, and a
    second plug of a good stick installs."""
    disk = fresh_disk(work, "pull")
    stick = os.path.join(work, "pull-stick.img")
    make_stick(stick, os.path.join(work, "bundle-big"), 768)
    g = boot(work, "pull-1", disk, 0)
    booted(g, 1)
    plugged = g.plug(stick)
    g.wait(AGENT + r"stick .* inserted: do not remove it", 120, "the agent seeing the stick")
    g.wait(AGENT + r".*: ([1-9]|[1-8][0-9])%", INSTALL, "the copy under way")
    g.unplug(plugged)
    g.wait(AGENT + r"error: ", 300, "the error after the pull")
    line = g.lines[g.pos - 1]
    g.wait(AGENT + r"the stick can be removed", 60)
    check("Input/output error" in line, f"the error should name the failed read: {line!r}")
    # The same stick again: it is a good stick, the pull did not harm it.
    install_and_reboot(g, stick)
    entries = boot_entries(disk)
    check(len(entries) == 2, f"two deployments after the install: {[e['file'] for e in entries]}")
    g = boot(work, "pull-2", disk, 0)
    g.wait(AGENT + r"updated to ", FINALIZE, "finalize's success")
    booted(g, 2)
    g.quit()
    report, _ = read_report(stick)
    check(report["exit_code"] == 100, f"report: {report}")


SCENARIOS = {"happy": happy, "rollback": rollback, "pull": pull}


def run_one(work, name, results):
    t = time.monotonic()
    try:
        SCENARIOS[name](work)
        results[name] = ("ok", time.monotonic() - t)
    except Exception as e:  # noqa: BLE001 -- a scenario's failure must not hide the others'
        print(f"FAILED {name}: {e}", flush=True)
        results[name] = ("FAILED", time.monotonic() - t)
    finally:
        for g in Guest.started_ones:
            if g.name.startswith(name + "-"):
                g.kill()


def main():
    """Scenarios run side by side (--jobs, default 3): each is one single-threaded TCG
    machine, and the 20-minute budget does not allow them one after the other."""
    args = sys.argv[1:]
    jobs = 3
    if args[:1] == ["--jobs"]:
        jobs, args = int(args[1]), args[2:]
    work, names = args[0], args[1:] or list(SCENARIOS)
    for name in names:
        print(f"== scenario {name}: {' '.join(SCENARIOS[name].__doc__.split())}", flush=True)
    t0 = time.monotonic()
    results = {}
    pending = list(names)
    running = []
    while pending or running:
        running = [t for t in running if t.is_alive()]
        while pending and len(running) < jobs:
            t = threading.Thread(target=run_one, args=(work, pending.pop(0), results))
            t.start()
            running.append(t)
        time.sleep(0.5)
    for name in names:
        result, secs = results[name]
        print(f"== {name}: {result} in {secs:.0f} s")
    print(f"== scenarios took {time.monotonic() - t0:.0f} s (--jobs {jobs})")
    sys.exit(0 if all(results[n][0] == "ok" for n in names) else 1)


if __name__ == "__main__":
    main()
