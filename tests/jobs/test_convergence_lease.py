"""Convergence driven by a burst worker alone (or one worker of the test's own): the
dataset's lease, a dead holder's, lookups by id, the circles' turns.

Kept apart from ``test_convergence.py``, whose module-wide workers (the ``workers``
fixture) would take these tests' jobs while they run: a test that drives the jobs with
``run_worker`` must be the only one taking them."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import leases, locks
from ckanext.dcor_depot.cli import append_resource
from ckanext.dcor_depot.jobs import converge, queue

from ..conftest import (
    Workers,
    anonymous_status,
    appended,
    derived_ini,
    kill_tree,
    release_scheduler_locks,
    stop_at,
    wait_until_stopped,
    worker_command,
)

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


def test_a_switch_made_while_work_on_the_dataset_fails_is_converged_all_the_same(
    cli, random_file, run_worker
):
    """A convergence job that finds the dataset held leaves the change to the holder (a
    move to another circle holds it for a long copy): when the holder's work fails, the
    change must still reach the objects."""
    dataset = factories.Dataset(owner_org=factories.Organization()["id"])
    appended = cli.invoke(append_resource, [str(random_file(1000)), dataset["id"]])
    assert appended.exit_code == 0, appended.output
    url = helpers.call_action("package_show", id=dataset["id"])["resources"][0]["s3_url"]
    assert anonymous_status(url) == 200
    with pytest.raises(RuntimeError):
        with converge.dataset_lease(dataset["id"]):
            helpers.call_action("package_patch", id=dataset["id"], private=True)
            run_worker()  # the convergence job finds the dataset held
            assert anonymous_status(url) == 200
            raise RuntimeError("the copy failed")
    run_worker()
    assert anonymous_status(url) == 403


def test_a_dataset_named_after_another_ones_id_gets_none_of_its_convergence(
    cli, random_file, run_worker
):
    """Dataset names are free (any user names theirs); a lookup by "id or name" takes
    the id first, whatever the rows' order."""
    dataset = factories.Dataset(owner_org=factories.Organization()["id"], private=False)
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    assert anonymous_status(url) == 200
    mallory = factories.User()
    own = factories.Organization(users=[{"name": mallory["name"], "capacity": "admin"}])
    namesake = factories.Dataset(name=dataset["id"], owner_org=own["id"], user=mallory)
    assert namesake["name"] == dataset["id"]
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    run_worker()
    assert anonymous_status(url) == 403


def _turns_ended() -> set[str]:
    from ckan.lib.jobs import get_queue

    return set(get_queue(queue.CONVERGE).finished_job_registry.get_job_ids())


def _converged_in_order(before: set[str]) -> list[str]:
    """The datasets the circles' turns converged, in the order the turns ended (turns
    that ended ``before`` left out)."""
    from ckan.lib.redis import connect_to_redis
    from rq.job import Job

    ids = sorted(_turns_ended() - before)
    turns = [j for j in Job.fetch_many(ids, connection=connect_to_redis()) if j]
    # a turn names the dataset it converged (a dataset's own job, as before turns: its id)
    ran = sorted((job.ended_at, job.meta.get("dataset") or job.args[0]) for job in turns)
    return [dataset for _, dataset in ran]


def test_circles_take_turns_so_one_users_switches_delay_another_circle_by_one_dataset(
    cli, random_file, run_worker
):
    """One user switches six datasets of their circle private at once, then another user
    of another circle switches one: that switch is converged second, not seventh."""
    busy = factories.Organization()
    theirs = [factories.Dataset(owner_org=busy["id"]) for _ in range(6)]
    for dataset in theirs:
        appended(cli, dataset, random_file(1000))
    mine = factories.Dataset(owner_org=factories.Organization()["id"])
    url = appended(cli, mine, random_file(1000))["s3_url"]
    run_worker()
    assert anonymous_status(url) == 200
    before = _turns_ended()
    for dataset in theirs:
        helpers.call_action("package_patch", id=dataset["id"], private=True)
    helpers.call_action("package_patch", id=mine["id"], private=True)
    run_worker()  # one worker: the turns run one after the other
    switched = {mine["id"], *(d["id"] for d in theirs)}
    order = [dataset for dataset in _converged_in_order(before) if dataset in switched]
    assert sorted(order) == sorted(switched)
    assert order.index(mine["id"]) == 1, order  # after one dataset of the busy circle
    assert anonymous_status(url) == 403


def test_while_a_circle_s_turn_runs_its_changes_queue_no_other_turn(cli, random_file, run_worker):
    """A circle holds at most one turn, queued or running: a change of the busy circle made
    while its turn runs waits for that turn's end, which queues the next; another circle's
    switch made meanwhile is queued right behind the running turn, not behind a second
    turn of the busy circle."""
    from ckan.lib.jobs import get_queue
    from rq.job import Job, JobStatus

    busy = factories.Organization()
    first, second = (factories.Dataset(owner_org=busy["id"]) for _ in range(2))
    mine = factories.Dataset(owner_org=factories.Organization()["id"])
    datasets = (first, second, mine)
    urls = [appended(cli, dataset, random_file(1000))["s3_url"] for dataset in datasets]
    run_worker()
    turns = get_queue(queue.CONVERGE)
    helpers.call_action("package_patch", id=first["id"], private=True)
    (running,) = turns.get_job_ids()
    job = Job.fetch(running, connection=turns.connection)
    turns.remove(job)  # a worker takes the busy circle's turn
    job.set_status(JobStatus.STARTED)
    helpers.call_action("package_patch", id=second["id"], private=True)
    helpers.call_action("package_patch", id=mine["id"], private=True)
    (mine_turn,) = turns.get_job_ids()  # nothing of the busy circle while its turn runs
    assert mine_turn.startswith(f"dcor-depot-converge-{mine['owner_org']}-"), mine_turn
    job.perform()  # the turn ends: it converged the first dataset and queues the next turn
    assert turns.get_job_ids()[0] == mine_turn
    (next_turn,) = turns.get_job_ids()[1:]
    assert next_turn.startswith(f"dcor-depot-converge-{busy['id']}-"), next_turn
    assert anonymous_status(urls[0]) == 403
    run_worker()
    assert [anonymous_status(url) for url in urls] == [403, 403, 403]


HOLDER = """
import sys, time, uuid, redis
client = redis.Redis.from_url(sys.argv[1])
assert client.set(sys.argv[2], uuid.uuid4().hex, nx=True, px=3000)
print("holding", flush=True)
while True:  # renewed, as a live holder does, until the process is killed
    time.sleep(1)
    client.pexpire(sys.argv[2], 3000)
"""


def test_a_change_left_to_a_holder_that_was_killed_is_converged_when_its_lease_ends(
    cli, random_file, ckan_config
):
    """A convergence that finds the dataset's lease held leaves the change to the holder;
    a holder that is killed converges nothing: the change must be converged as soon as its
    lease (3 s here) ends, with no other change and no sweep."""
    dataset = factories.Dataset(owner_org=factories.Organization()["id"])
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    assert anonymous_status(url) == 200
    lease = locks.dataset_lock(dataset["id"]).key
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ckan_config["ckan.redis.url"], lease],
        stdout=subprocess.PIPE,
        text=True,
    )
    workers = Workers(1)
    try:
        assert holder.stdout.readline() == "holding\n"
        helpers.call_action("package_patch", id=dataset["id"], private=True)
        line = leases.redis_key("line", dataset["owner_org"])
        deadline = time.monotonic() + 60
        # the turn found the lease held: the dataset waits in line until the lease ends
        while (leases.connection().zscore(line, dataset["id"]) or 0) <= time.time():
            assert time.monotonic() < deadline, workers.log()
            time.sleep(0.05)  # polling for the worker's turn
        assert anonymous_status(url) == 200
        holder.kill()
        holder.wait()
        killed = time.monotonic()
        while anonymous_status(url) != 403:
            assert time.monotonic() - killed < 3 + 5, "not converged after the lease ended"
            time.sleep(0.1)  # polling for the scheduled turn
        workers.drain()
    finally:
        holder.kill()
        workers.stop()


def _worker_stopping_at(point: str, folder, **options) -> tuple[subprocess.Popen, Path]:
    """A long-running worker in a session of its own, with these options of the
    extension (``lease_seconds=3``), that stops itself at ``point`` (see :func:`stop_at`;
    its marker: ``folder/stopped``); its log: ``folder/worker.log``. Returns it and its ini."""
    ini = derived_ini(folder, **{f"ckanext.dcor_depot.{k}": str(v) for k, v in options.items()})
    log = open(folder / "worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        worker_command(str(ini), burst=False),
        stdout=log,
        stderr=log,
        start_new_session=True,
        env=stop_at(point, folder / "stopped"),
    )
    return worker, ini


def test_a_turn_whose_work_horse_is_killed_leaves_its_dataset_in_line(cli, random_file, tmp_path):
    """The work horse of a circle's turn is killed while it converges a private switch
    (after it read the object's tags): the dataset waits in line again and the circle's
    next turn converges it once the dead horse's lease (3 s here) ends, with no other
    change and no sweep."""
    dataset = factories.Dataset(owner_org=factories.Organization()["id"])
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    assert anonymous_status(url) == 200
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    worker, _ = _worker_stopping_at("s3-tagging", tmp_path, lease_seconds=3)
    try:
        horse = wait_until_stopped(tmp_path / "stopped", worker, "the turn's read of the tags")
        os.kill(horse, signal.SIGKILL)
        killed = time.monotonic()
        while anonymous_status(url) != 403:
            assert time.monotonic() - killed < 3 + 10, (tmp_path / "worker.log").read_text()
            time.sleep(0.1)  # polling for the circle's next turn
    finally:
        kill_tree(worker.pid)
        worker.wait()
        release_scheduler_locks()


def test_a_turn_whose_worker_was_killed_with_it_is_taken_over(cli, random_file, tmp_path):
    """A worker is killed together with the work horse of a circle's turn (no handler runs):
    RQ still says the turn is started. Once the dead worker's registration has lapsed (RQ:
    90 s after its last heartbeat; removed here), another converging worker takes the circle
    over at its next look at the lines (every second here) and converges the private
    switch once the dead horse's lease ends, without another change or the sweep."""
    from ckan.lib.jobs import get_queue
    from rq.job import Job
    from rq.worker import Worker

    dataset = factories.Dataset(owner_org=factories.Organization()["id"])
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    doomed, ini = _worker_stopping_at("s3-tagging", tmp_path, lease_seconds=3, line_check_seconds=1)
    survivor = None
    try:
        wait_until_stopped(tmp_path / "stopped", doomed, "the turn's read of the tags")
        turns = get_queue(queue.CONVERGE)
        turn = leases.connection().get(leases.redis_key("turn", dataset["owner_org"]))
        job = Job.fetch(turn.decode().split()[0], connection=turns.connection)
        assert job.get_status() == "started"
        owner = job.worker_name
        survivor = Workers(1, ini=str(ini))  # started and registered
        kill_tree(doomed.pid)
        doomed.wait()
        killed = time.monotonic()
        leases.connection().delete(Worker.redis_worker_namespace_prefix + owner)
        release_scheduler_locks()  # the dead worker's scheduler: RQ's locks last a minute
        while anonymous_status(url) != 403:
            assert time.monotonic() - killed < 3 + 10, survivor.log()
            time.sleep(0.1)  # polling for the circle's new turn
    finally:
        kill_tree(doomed.pid)
        doomed.wait()
        if survivor is not None:
            survivor.stop()  # SIGTERM, as an operator stops it (even during a look)
        release_scheduler_locks()


def test_a_worker_asked_to_stop_during_its_look_at_the_lines_stops(tmp_path):
    """An operator stops a converging worker (SIGTERM) while it looks at the circles'
    lines: it stops once the look is done, as between two jobs. (The look caught the
    stop RQ raised in it as a failed look, and the worker went on for ever.)"""
    worker, _ = _worker_stopping_at("line-look", tmp_path, line_check_seconds=1)
    try:
        wait_until_stopped(tmp_path / "stopped", worker, "the worker's look at the lines")
        worker.send_signal(signal.SIGTERM)  # held until the worker goes on
        worker.send_signal(signal.SIGCONT)
        try:
            assert worker.wait(timeout=30) == 0
        except subprocess.TimeoutExpired:
            log = (tmp_path / "worker.log").read_text()[-2000:]
            raise AssertionError("the worker went on after SIGTERM: " + log) from None
    finally:
        kill_tree(worker.pid)
        worker.wait()
        release_scheduler_locks()


def _running_for(job, seconds: float) -> bool:
    """Whether RQ's job has been running (started) for at least ``seconds``."""
    job.refresh()
    if job.get_status() != "started" or job.started_at is None:
        return False
    started = job.started_at.replace(tzinfo=datetime.timezone.utc).timestamp()
    return time.time() - started >= seconds


def test_a_worker_asked_to_stop_during_a_job_ends_with_it_and_starts_no_scheduler(tmp_path):
    """An operator stops a converging worker (SIGTERM) while it runs a job; the job ends
    right after. The worker ends, without starting the scheduler that RQ stopped at the
    request again. (At its look, due by then, it did; its teardown then stopped the new
    scheduler at once, which may ignore a signal within 1 s of the first, and the worker
    waited for it: twice for more than 60 s on a fresh machine.)"""
    from ckan.lib.jobs import get_queue

    ini = derived_ini(tmp_path, **{"ckanext.dcor_depot.line_check_seconds": "1"})
    release_scheduler_locks()  # the worker runs RQ's scheduler
    done = tmp_path / "done"
    workers = Workers(1, ini=str(ini))
    worker = workers.procs[0]
    try:
        job = get_queue(queue.SHORT).enqueue(
            subprocess.run, ["sh", "-c", f'while [ ! -e "{done}" ]; do sleep 0.02; done']
        )
        while not _running_for(job, seconds=1.5):
            time.sleep(0.05)  # polling until a look is due (every second here)
        worker.terminate()
        done.touch()  # the job ends right after the request
        try:
            assert worker.wait(timeout=30) == 0
        finally:
            log = workers.log(tail=None)
        assert "has finished job" in log, log
        after = log[log.index("has finished job") :]
        assert "Acquired scheduler lock" not in after, after
    finally:
        done.touch()
        kill_tree(worker.pid)
        worker.wait()
        release_scheduler_locks()


def test_a_turn_being_queued_holds_its_circle_until_its_queuing_has_surely_stopped(
    cli, random_file, run_worker
):
    """A circle's turn is written in Redis just before its job is queued: a change of the
    circle made in between queues no second turn; a turn whose job never came (whoever
    queued it stopped in between) holds the circle for a few seconds only, and the next
    look of a converging worker at the lines queues the circle's turn."""
    from ckan.lib.jobs import get_queue

    circle = factories.Organization()["id"]
    dataset = factories.Dataset(owner_org=circle)
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    turns = get_queue(queue.CONVERGE)
    turn = leases.redis_key("turn", circle)
    run_worker()  # what the append queued
    now = time.time()
    leases.connection().set(turn, f"dcor-depot-converge-{circle}-coming {now} {now}")
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    assert not turns.get_job_ids(), "a second turn while the first is being queued"
    assert converge.queue_orphaned_turns() == 0  # a worker's look at the lines
    then = now - converge._TURN_GRACE - 1
    leases.connection().set(turn, f"dcor-depot-converge-{circle}-lost {then} {then}")
    assert converge.queue_orphaned_turns() == 1
    (queued,) = turns.get_job_ids()
    assert queued.startswith(f"dcor-depot-converge-{circle}-"), queued
    run_worker()
    assert anonymous_status(url) == 403


def test_a_turn_a_worker_took_and_never_started_does_not_hold_its_circle(
    cli, random_file, run_worker
):
    """A worker takes a circle's turn off RQ's queue and is killed before it starts it:
    RQ still says "queued", but the turn is in none of RQ's lists of queued jobs. Once the
    turn is older than a few seconds, the next look of a converging worker at the lines (or
    the circle's next change) queues a new turn."""
    from ckan.lib.jobs import get_queue
    from rq.job import Job

    circle = factories.Organization()["id"]
    dataset = factories.Dataset(owner_org=circle)
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    run_worker()  # what the append queued
    turns = get_queue(queue.CONVERGE)
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    (taken,) = turns.get_job_ids()
    turns.remove(Job.fetch(taken, connection=turns.connection))  # taken, never started
    turn = leases.redis_key("turn", circle)
    jid, when, _ = leases.connection().get(turn).decode().split()
    then = time.time() - converge._TURN_GRACE - 1
    leases.connection().set(turn, f"{jid} {when} {then}")  # written a while ago
    assert converge.queue_orphaned_turns() == 1  # a converging worker's look
    (queued,) = turns.get_job_ids()
    assert queued != taken and queued.startswith(f"dcor-depot-converge-{circle}-"), queued
    run_worker()
    assert anonymous_status(url) == 403


def test_a_look_at_the_lines_adds_no_dataset_and_one_circle_never_stops_it(
    cli, random_file, run_worker, monkeypatch
):
    """A converging worker's look at the circles' lines queues the turn of each circle
    whose line holds a dataset and whose turn nobody holds, puts nothing in any line (a
    dataset a turn just converged must not come back), and a circle whose look fails does
    not keep the others from being looked at."""
    from ckan.lib.jobs import get_queue

    circles = [factories.Organization()["id"] for _ in range(3)]
    datasets = [factories.Dataset(owner_org=circle) for circle in circles]
    urls = [appended(cli, dataset, random_file(1000))["s3_url"] for dataset in datasets]
    run_worker()
    turns = get_queue(queue.CONVERGE)
    for dataset in datasets[1:]:
        helpers.call_action("package_patch", id=dataset["id"], private=True)
    client = leases.connection()
    for circle in circles:
        client.delete(leases.redis_key("turn", circle))  # their turns lost
    turns.empty()
    lines = [leases.redis_key("line", circle) for circle in circles]
    before = [client.zrange(line, 0, -1, withscores=True) for line in lines]
    # the look at a line that a turn emptied since the look found it: nothing enters
    assert not converge._enter_line(circles[0], "", converge._NEVER, time.time())
    real = converge._enter_line

    def failing_for_one(circle, *args):
        if circle == circles[1]:
            raise ConnectionError("Redis went away for a moment")
        return real(circle, *args)

    with monkeypatch.context() as patched:
        patched.setattr(converge, "_enter_line", failing_for_one)
        assert converge.queue_orphaned_turns() == 1  # the third circle's
    assert [client.zrange(line, 0, -1, withscores=True) for line in lines] == before
    (queued,) = turns.get_job_ids()
    assert queued.startswith(f"dcor-depot-converge-{circles[2]}-"), queued
    assert converge.queue_orphaned_turns() == 1  # the second circle's, at the next look
    run_worker()
    assert [anonymous_status(url) for url in urls] == [200, 403, 403]


def test_one_users_changes_during_a_pass_do_not_keep_the_circle_s_turn(
    cli, random_file, run_worker, monkeypatch
):
    """An editor switches a dataset again during every pass over it: the circle's turn
    makes one pass and hands the dataset to the circle's next turn, queued behind the other
    circles' turns (it used to pass over it again as long as changes came)."""
    circle = factories.Organization()["id"]
    dataset = factories.Dataset(owner_org=circle)
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    passes = []
    real = converge.converge_files

    def switched_meanwhile(*args, **kwargs):
        passes.append(kwargs)
        assert len(passes) < 3, "the turn keeps passing over one user's changes"
        done = real(*args, **kwargs)
        converge.request_convergence(dataset["id"], circle)  # the editor's next change
        return done

    with monkeypatch.context() as patched:
        patched.setattr(converge, "converge_files", switched_meanwhile)
        converge.converge_turn(circle)  # the circle's turn, run here
    assert len(passes) == 1
    assert anonymous_status(url) == 403
    line = leases.redis_key("line", circle)
    assert leases.connection().zscore(line, dataset["id"]) is not None, "not back in line"
    run_worker()  # the circle's next turn
    assert not converge.pending(dataset["id"])


def test_a_worker_that_starts_queues_the_turns_a_stopped_worker_left(cli, random_file, run_worker):
    """A worker stopped while it ran a circle's turn (its job never ended; RQ marks it
    failed later): the circle's line still holds the switch. The next worker that starts
    queues the circle's turn: converged without another change or the sweep."""
    from ckan.lib.jobs import get_queue
    from rq.job import Job, JobStatus

    dataset = factories.Dataset(owner_org=factories.Organization()["id"])
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    turns = get_queue(queue.CONVERGE)
    (taken,) = turns.get_job_ids()
    job = Job.fetch(taken, connection=turns.connection)
    turns.remove(job)  # a worker took it and stopped with it
    job.set_status(JobStatus.FAILED)
    assert anonymous_status(url) == 200
    run_worker()
    assert anonymous_status(url) == 403


def test_a_scheduled_turn_whose_time_came_does_not_hold_its_circle(cli, random_file, run_worker):
    """A circle's turn scheduled for when a lease ends, whose time has come but which RQ's
    scheduler has not queued yet (it looks once a second): a private switch of the circle
    made then is queued at once, not left waiting for the scheduler."""
    from ckan.lib.jobs import get_queue

    circle = factories.Organization()["id"]
    waiting, switched = (factories.Dataset(owner_org=circle) for _ in range(2))
    url = appended(cli, switched, random_file(1000))["s3_url"]
    turns = get_queue(queue.CONVERGE)
    run_worker()
    when = time.time() + 0.3
    converge.wait_in_line(waiting["id"], circle, at=when)  # a lease that ends at `when`
    assert turns.scheduled_job_registry.count == 1 and not turns.get_job_ids()
    while time.time() <= when:
        time.sleep(0.05)  # until the scheduled turn's time has come
    helpers.call_action("package_patch", id=switched["id"], private=True)
    (turn,) = turns.get_job_ids()  # queued now, beside the scheduled one
    assert turn.startswith(f"dcor-depot-converge-{circle}-"), turn
    run_worker()
    assert anonymous_status(url) == 403


def test_a_turn_that_failed_converges_its_dataset_again_later(
    cli, random_file, run_worker, monkeypatch
):
    """A circle's turn fails while it converges a private switch (the store refused a tag):
    the job fails, and the dataset waits in its circle's line again, converged by a later
    turn without another change or the daily sweep."""
    from ckanext.dcor_depot import errors

    circle = factories.Organization()["id"]
    dataset = factories.Dataset(owner_org=circle)
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    helpers.call_action("package_patch", id=dataset["id"], private=True)

    def refused(*args, **kwargs):
        raise errors.JobError("the store refused a tag (503)")

    with monkeypatch.context() as patched:
        patched.setattr(converge, "converge_files", refused)
        patched.setattr(converge, "RETRY_SECONDS", 0.5)
        with pytest.raises(errors.JobError):
            converge.converge_turn(circle)  # the turn, run here
    assert anonymous_status(url) == 200  # not converged yet
    due = leases.connection().zscore(leases.redis_key("line", circle), dataset["id"])
    assert due is not None and due > time.time() - 1, "the dataset is not back in line"
    while time.time() <= due:
        time.sleep(0.05)  # until the retry is due
    run_worker()  # the circle's queued turn
    assert anonymous_status(url) == 403
