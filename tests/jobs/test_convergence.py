"""Access to every file follows CKAN on every path that changes CKAN.

A matrix: files of every origin (a web upload kept on block storage, a web
upload migrated away with --delete-after-migration, a direct-to-S3 upload,
append-resource, the figshare import) x every transition (private <-> public,
draft -> active, resource_delete with the workers busy and another resource
created before they run, resources dropped by package_update and by
package_revise, dataset delete, dataset purge, owner change by a sysadmin and
by an editor of both circles, the bulk actions). Every transition is made as
a user would, through CKAN's API, by an editor who is not a sysadmin where
CKAN lets an editor do it. After the real workers have run: an anonymous GET
of every object in every bucket and CKAN's anonymous download agree with
CKAN's permission, and a member's download returns the recorded bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import ckan.model as model
import ckan.plugins.toolkit as tk
import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import config, placement
from ckanext.dcor_depot.cli import append_resource
from ckanext.dcor_depot.cli import dcor_migrate_resources_to_object_store as migrate
from ckanext.dcor_depot.operations.figshare_import import ArticleImport, ensure_organization
from ckanext.dcor_depot.storage.figshare_api import FigshareClient

from ..conftest import anonymous_status, http
from ..logic.test_upload_route import uploaded

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


@dataclasses.dataclass
class World:
    """Two circles, their people, and datasets with files of every origin."""

    app: object
    store: object
    sysadmin: dict
    editor: dict  # editor of both circles and of the figshare mirror
    admin: dict  # admin of circle A (the bulk actions are for circle admins)
    member: dict  # member of every circle
    circle_a: dict
    circle_b: dict
    figshare_circle: dict
    tokens: dict = dataclasses.field(default_factory=dict)

    def token(self, user: dict) -> str:
        """An API token of ``user`` (one per user: making one writes to the database)."""
        if user["name"] not in self.tokens:
            self.tokens[user["name"]] = factories.APIToken(user=user["name"])["token"]
        return self.tokens[user["name"]]

    def call(self, user: dict, action: str, **data):
        """An action through CKAN's API, as ``user``; the answer's result."""
        answer = self.app.post(
            f"/api/action/{action}", json=data, headers={"Authorization": self.token(user)}
        )
        assert answer.status_code == 200, (action, answer.body)
        return answer.json["result"]


@pytest.fixture
def world(app, store, workers, figshare_server, ckan_config, monkeypatch):
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.figshare_api_url", figshare_server.api_url)
    people = {name: factories.User(name=name) for name in ("editor", "admin", "member")}
    capacities = [
        {"name": "editor", "capacity": "editor"},
        {"name": "member", "capacity": "member"},
    ]
    circle_a = factories.Organization(
        name="circle-a", users=[*capacities, {"name": "admin", "capacity": "admin"}]
    )
    circle_b = factories.Organization(name="circle-b", users=capacities)
    figshare_circle = ensure_organization()
    for user in capacities:
        helpers.call_action(
            "organization_member_create",
            id=figshare_circle["id"],
            username=user["name"],
            role=user["capacity"],
        )
    return World(
        app=app,
        store=store,
        sysadmin=factories.Sysadmin(),
        circle_a=circle_a,
        circle_b=circle_b,
        figshare_circle=figshare_circle,
        **people,
    )


def files_of_every_origin(world, workers, cli, random_file, figshare_server, tmp_path, **state):
    """Dataset D in circle A (a web upload kept, a web upload migrated away, a
    direct-to-S3 upload, an appended file) and dataset F from figshare, both in ``state``."""
    dataset = world.call(
        world.editor, "package_create", name="cells", owner_org=world.circle_a["id"], private=True
    )
    migrated = _web_upload(world, dataset, random_file(3000, "migrated.bin"))
    workers.drain()
    result = cli.invoke(migrate, ["--delete-after-migration"])
    assert result.exit_code == 0, result.output
    assert not placement.ckan_path(migrated["id"]).exists()
    _web_upload(world, dataset, random_file(4000, "local.bin"))
    uploaded(world.app, world.editor, dataset, random_file(5000, "direct.bin"))
    appended = random_file(6000, "appended.bin")
    result = cli.invoke(append_resource, [str(appended), dataset["id"]])
    assert result.exit_code == 0, result.output

    source = random_file(7000, "reference.bin")
    doi = figshare_server.add_article(4242, 1, [figshare_server.file_entry(source)])
    client = FigshareClient(figshare_server.api_url, interval=0)
    report = ArticleImport(client, world.store, world.figshare_circle, lambda text: None).run(doi)
    figshare = helpers.call_action("package_show", id=report.name)
    for each in (dataset, figshare):
        helpers.call_action("package_patch", id=each["id"], **state)
    workers.drain()
    datasets = [helpers.call_action("package_show", id=d["id"]) for d in (dataset, figshare)]
    assert [len(d["resources"]) for d in datasets] == [4, 1]
    return datasets


def _web_upload(world, dataset, path) -> dict:
    token = world.token(world.editor)
    with open(path, "rb") as fd:
        answer = world.app.post(
            "/api/action/resource_create",
            data={"package_id": dataset["id"], "name": path.name, "upload": (fd, path.name)},
            headers={"Authorization": token},
            content_type="multipart/form-data",
        )
    assert answer.status_code == 200, answer.body
    return answer.json["result"]


# the transitions: (start state of the datasets, what is done), each through CKAN's API


def make_public(world, datasets):
    for dataset in datasets:
        world.call(world.editor, "package_patch", id=dataset["id"], private=False)


def make_private(world, datasets):
    for dataset in datasets:
        world.call(world.editor, "package_patch", id=dataset["id"], private=True)


def activate_draft(world, datasets):
    for dataset in datasets:
        world.call(world.editor, "package_patch", id=dataset["id"], state="active")


def delete_resources_while_busy(world, datasets):
    """Deleted while the workers are busy; a new resource makes CKAN drop the deleted rows."""
    for dataset in datasets:
        for resource in dataset["resources"]:
            world.call(world.editor, "resource_delete", id=resource["id"])
        world.call(
            world.editor, "resource_create", package_id=dataset["id"], url="https://example.org"
        )
        rows = model.Session.query(model.Resource).filter_by(package_id=dataset["id"]).all()
        assert len(rows) == 1  # CKAN removed the rows of the deleted resources
        model.Session.rollback()


def drop_by_package_update(world, datasets):
    for dataset in datasets:
        shown = world.call(world.editor, "package_show", id=dataset["id"])
        world.call(world.editor, "package_update", **{**shown, "resources": []})
        assert world.call(world.editor, "package_show", id=dataset["id"])["resources"] == []


def drop_by_package_revise(world, datasets):
    for dataset in datasets:
        count = len(dataset["resources"])
        drop = [f"-resources__{i}" for i in range(count)]
        world.call(world.editor, "package_revise", match={"id": dataset["id"]}, filter=drop)
        assert world.call(world.editor, "package_show", id=dataset["id"])["resources"] == []


def delete_dataset(world, datasets):
    for dataset in datasets:
        world.call(world.editor, "package_delete", id=dataset["id"])


def purge_dataset(world, datasets):
    for dataset in datasets:
        world.call(world.sysadmin, "dataset_purge", id=dataset["id"])


def move_by_sysadmin(world, datasets):
    for dataset in datasets:
        world.call(
            world.sysadmin, "package_patch", id=dataset["id"], owner_org=world.circle_b["id"]
        )


def move_by_editor(world, datasets):
    for dataset in datasets:
        world.call(world.editor, "package_patch", id=dataset["id"], owner_org=world.circle_b["id"])


def bulk(action: str):
    def transition(world, datasets):
        for dataset in datasets:
            org = dataset["owner_org"]
            admin = world.admin if org == world.circle_a["id"] else world.sysadmin
            world.call(admin, action, org_id=org, datasets=[dataset["id"]])

    transition.__name__ = action
    return transition


TRANSITIONS = {
    "private-to-public": ({"private": True}, make_public),
    "public-to-private": ({"private": False}, make_private),
    "draft-to-active": ({"private": False, "state": "draft"}, activate_draft),
    "resource-delete-busy": ({"private": False}, delete_resources_while_busy),
    "drop-package-update": ({"private": False}, drop_by_package_update),
    "drop-package-revise": ({"private": False}, drop_by_package_revise),
    "dataset-delete": ({"private": False}, delete_dataset),
    "dataset-purge": ({"private": False}, purge_dataset),
    "owner-sysadmin": ({"private": False}, move_by_sysadmin),
    "owner-editor": ({"private": False}, move_by_editor),
    "bulk-private": ({"private": False}, bulk("bulk_update_private")),
    "bulk-public": ({"private": True}, bulk("bulk_update_public")),
    "bulk-delete": ({"private": False}, bulk("bulk_update_delete")),
}


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_access_to_every_file_follows_ckan(
    transition, world, workers, cli, random_file, figshare_server, tmp_path
):
    state, change = TRANSITIONS[transition]
    datasets = files_of_every_origin(
        world, workers, cli, random_file, figshare_server, tmp_path, **state
    )
    recorded = {r["id"]: r["sha256"] for d in datasets for r in d["resources"] if r.get("sha256")}
    assert len(recorded) == 5
    assert_access_follows_ckan(world, datasets, recorded)  # before: as the start state says
    if transition == "resource-delete-busy":
        with workers.paused():
            change(world, datasets)
    else:
        change(world, datasets)
    workers.drain()
    assert_access_follows_ckan(world, datasets, recorded)


def assert_access_follows_ckan(world, datasets, recorded: dict[str, str]) -> None:
    """Where every file's object must be and who may read it, from CKAN's state alone (not
    from the placement code under test): in the bucket of its dataset's circle now, under
    ``resource/RES/OUR/CEID``, readable anonymously exactly when CKAN lets anybody read it.
    Every other object, in every circle bucket, refuses anonymous users."""
    store = world.store
    template = tk.config["dcor_object_store.bucket_name"]
    expected = {}  # object location -> whether anonymous reading is allowed
    for resource_id in recorded:
        resource = model.Resource.get(resource_id)
        if resource is None or resource.state != "active":
            continue  # its files are kept, private
        package = model.Package.get(resource.package_id)
        if package.state == "deleted":
            continue
        bucket = template.format(organization_id=package.owner_org)
        key = f"resource/{resource_id[:3]}/{resource_id[3:6]}/{resource_id[6:]}"
        expected[(bucket, key)] = allowed(package.id, resource_id)
    everything = [
        (bucket, info.key)
        for bucket in store.list_buckets(prefix=template.split("{")[0])
        for info in store.iter_objects(bucket)
    ]
    assert len(everything) >= len(recorded)
    missing = set(expected) - set(everything)
    assert not missing, f"objects not where their dataset's circle is: {missing}"
    for bucket, key in everything:
        status = anonymous_status(store.object_url(bucket, key))
        assert status == (200 if expected.get((bucket, key)) else 403), (bucket, key, status)
        if (bucket, key) not in expected:
            # no old copy of a file that moved is left behind its new place
            assert not any(k == key for (_, k) in expected), (bucket, key, "a copy left")

    for resource_id, sha256 in recorded.items():
        resource = model.Resource.get(resource_id)
        if resource is None or resource.state != "active":
            continue  # CKAN has no download of it
        package = model.Package.get(resource.package_id)
        url = f"/dataset/{package.id}/resource/{resource_id}/download"
        anonymous = download(world, url, None)
        if allowed(package.id, resource_id):
            assert anonymous == (200, sha256), resource_id
        else:
            assert anonymous[0] in (403, 404), (resource_id, anonymous)
        if package.state != "deleted":
            assert download(world, url, world.member) == (200, sha256), resource_id
    model.Session.rollback()


def allowed(package_id: str, resource_id: str) -> bool:
    """CKAN's permission: may an anonymous user read this resource?"""
    context = {"user": "", "ignore_auth": False}
    try:
        helpers.call_action("resource_show", context=context, id=resource_id)
        package = helpers.call_action("package_show", context=dict(context), id=package_id)
    except (tk.NotAuthorized, tk.ObjectNotFound):
        return False
    return package["state"] == "active"


def download(world: World, url: str, user: dict | None) -> tuple[int, str | None]:
    """Status and SHA-256 of CKAN's download, following its redirect to S3 without credentials."""
    headers = {"Authorization": world.token(user)} if user else {}
    answer = world.app.get(url, headers=headers, follow_redirects=False)
    if answer.status_code == 302:
        with http.get(answer.headers["Location"], timeout=60) as s3:
            if s3.status_code != 200:
                return s3.status_code, None
            return 200, hashlib.sha256(s3.content).hexdigest()
    if answer.status_code != 200:
        return answer.status_code, None
    return 200, hashlib.sha256(answer.get_data()).hexdigest()


def test_local_copies_of_a_purged_dataset_are_unreadable_at_once(
    world, workers, cli, random_file, figshare_server, tmp_path
):
    datasets = files_of_every_origin(
        world, workers, cli, random_file, figshare_server, tmp_path, private=False
    )
    local = [r for r in datasets[0]["resources"] if r["name"] == "local.bin"][0]
    path = placement.ckan_path(local["id"])
    target = path.resolve()
    assert target != path and os.stat(target).st_mode & 0o444
    purge_dataset(world, datasets[:1])
    workers.drain()
    assert path.is_symlink() and os.stat(target).st_mode & 0o777 == 0
    assert config.purge_retention_days() == 30


def test_twenty_switches_with_two_workers_end_in_the_right_state(
    world, workers, cli, random_file, figshare_server, tmp_path
):
    """Switched back and forth while two workers converge: the last state wins."""
    datasets = files_of_every_origin(
        world, workers, cli, random_file, figshare_server, tmp_path, private=False
    )
    recorded = {r["id"]: r["sha256"] for d in datasets for r in d["resources"]}
    for turn in range(20):
        make_private(world, datasets) if turn % 2 == 0 else make_public(world, datasets)
    make_private(world, datasets)  # 21 switches in all: private at the end
    workers.drain()
    assert_access_follows_ckan(world, datasets, recorded)
    assert all(not allowed(d["id"], rid) for d in datasets for rid in recorded)
    make_public(world, datasets)
    workers.drain()
    assert_access_follows_ckan(world, datasets, recorded)


def test_a_public_download_stops_working_when_the_dataset_turns_private(
    world, workers, cli, random_file, figshare_server, tmp_path
):
    dataset, _ = files_of_every_origin(
        world, workers, cli, random_file, figshare_server, tmp_path, private=False
    )
    url = f"/dataset/{dataset['id']}/resource/%s/download"
    links = {}
    for resource in dataset["resources"]:
        answer = world.app.get(url % resource["id"], follow_redirects=False)
        if answer.status_code == 302:  # files in S3 (one stays on block storage)
            links[resource["name"]] = answer.headers["Location"]
    assert sorted(links) == ["appended.bin", "direct.bin", "migrated.bin"]
    for name, link in links.items():
        assert "X-Amz-" not in link  # not a presigned URL that would outlive a switch
        with http.get(link, timeout=60) as s3:
            assert s3.status_code == 200
            assert s3.headers["Content-Disposition"] == f'attachment; filename="{name}"'
    make_private(world, [dataset])
    workers.drain()
    for link in links.values():
        assert anonymous_status(link) == 403
    # a member still downloads, through a short presigned URL
    token = world.token(world.member)
    direct = next(r for r in dataset["resources"] if r["name"] == "direct.bin")
    answer = world.app.get(
        url % direct["id"], headers={"Authorization": token}, follow_redirects=False
    )
    assert answer.status_code == 302 and "X-Amz-Expires=600&" in answer.headers["Location"]
    with http.get(answer.headers["Location"], timeout=60) as s3:
        assert hashlib.sha256(s3.content).hexdigest() == direct["sha256"]
