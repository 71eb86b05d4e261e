"""Importing DCOR's reference datasets from figshare (``ckan import-figshare``).

A dataset is created as a draft and made active only when every file is in
place, so a run that stops half way leaves a draft that the next run
completes. Ids are reproducible (uuid5 of the DOI and name, and of the
dataset id and the file's MD5): two sites that import the same DOI get the
same dataset and resource ids. Each file is downloaded once: its MD5 is
checked against figshare's and its SHA-256 computed on the way, while it is
written to the tmp folder and, with an object store, sent to the circle's
bucket at the same time (:meth:`ObjectStore.upload_stream_verified`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
import markdownify

from .. import config, locks, placement, resource_fields
from ..dc_file import mimetype_for, read_dc_fields
from ..jobs import converge
from ..jobs.verified import record_verified_file
from ..logic import rules
from ..model import ckan_rows, depot_files
from ..storage.depot import FIGSHARE_DEPOT, DepotError, move_into_depot
from ..storage.figshare_api import Article, FigshareClient, FigshareError, FigshareFile
from ..storage.s3 import ObjectConflictError, ObjectStore, S3Error, UploadResult, sha256_of_file
from . import human_size

ORGANIZATION_NAME = "figshare-import"
ORGANIZATION_TITLE = "Figshare mirror"
#: The DOIs of DCOR's reference datasets.
BUNDLED_DOIS = Path(__file__).parent.parent / "figshare_dois.txt"
#: Namespace of the dataset and resource ids of imported datasets.
ID_NAMESPACE = uuid.UUID("41656e0b-719c-48e8-9212-6ae70980bbcb")
#: figshare's Creative Commons licenses (by their name in figshare) and their CKAN ids.
LICENSES = {
    "CC0": "CC0-1.0",
    "CC BY 4.0": "CC-BY-4.0",
    "CC BY-SA 4.0": "CC-BY-SA-4.0",
    "CC BY-ND 4.0": "CC-BY-ND-4.0",
    "CC BY-NC 4.0": "CC-BY-NC-4.0",
    "CC BY-NC-SA 4.0": "CC-BY-NC-SA-4.0",
    "CC BY-NC-ND 4.0": "CC-BY-NC-ND-4.0",
}
_BARE_DOI_RE = re.compile(r"^10\.\d{4,}/\S+$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


class FigshareImportError(Exception):
    """A dataset cannot be imported (now); the message names the DOI and says why."""


@dataclasses.dataclass
class Imported:
    doi: str
    name: str
    #: "imported" (new), "completed" (a draft of an earlier run), "repaired" (active,
    #: but files or object visibility were missing), "unchanged"
    outcome: str
    files: list[str] = dataclasses.field(default_factory=list)
    bytes: int = 0
    #: files not imported, with the reason
    skipped: list[str] = dataclasses.field(default_factory=list)
    #: objects whose visibility was repaired
    repaired: int = 0


def read_dois(path: Path) -> list[str]:
    """The DOIs in a file: one per line; blank lines and ``#`` comments are ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [doi for line in lines if (doi := line.split("#", 1)[0].strip())]


def dataset_id_for(doi: str, name: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{doi.lower()}/{name}"))


def resource_id_for(dataset_id: str, md5: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{dataset_id}/{md5.lower()}"))


def license_id(article: Article) -> str:
    try:
        return LICENSES[" ".join(article.license_name.split())]
    except KeyError:
        raise FigshareImportError(
            f"{article.doi}: figshare's license {article.license_name!r} "
            f"({article.license_url or 'no URL'}) has no CKAN id here (known: "
            f"{', '.join(LICENSES)}); nothing of this dataset was imported"
        ) from None


def reference(text: str) -> str:
    """A reference as DCOR shows it: URLs as they are, bare DOIs as ``doi:...``."""
    text = text.strip()
    return f"doi:{text}" if _BARE_DOI_RE.match(text) else text


def html_to_markdown(html: str) -> str:
    text = markdownify.markdownify(html, heading_style="ATX", bullets="-")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def dataset_fields(article: Article, organization_id: str) -> dict[str, Any]:
    """The CKAN dataset of a figshare article (a public one, created as a draft)."""
    name = f"figshare-{article.id}-v{article.version}"
    references = [reference(r) for r in article.references if r.strip()]
    return {
        "id": dataset_id_for(article.doi, name),
        "name": name,
        "title": article.title,
        "author": ", ".join(article.authors),
        "notes": html_to_markdown(article.description),
        "license_id": license_id(article),
        "url": f"https://doi.org/{article.doi}",
        "owner_org": organization_id,
        "private": False,
        "state": "draft",
        "extras": [
            {"key": "doi", "value": article.doi},
            {"key": "references", "value": ", ".join(references)},
        ],
    }


def ensure_organization() -> dict[str, Any]:
    """The organization of the mirror, created when missing."""
    try:
        return tk.get_action("organization_show")(
            ckan_rows.job_context(), {"id": ORGANIZATION_NAME}
        )
    except tk.ObjectNotFound:
        return tk.get_action("organization_create")(
            ckan_rows.job_context(), {"name": ORGANIZATION_NAME, "title": ORGANIZATION_TITLE}
        )


class ArticleImport:
    """The import of one DOI into the site (and its circle's bucket, with ``store``)."""

    def __init__(
        self,
        client: FigshareClient,
        store: ObjectStore | None,
        organization: dict[str, Any],
        echo: Callable[[str], None] = print,
    ):
        self.client = client
        self.store = store
        self.organization = organization
        self.echo = echo

    def run(self, doi: str) -> Imported:
        try:
            article = self.client.article(doi)
            fields = dataset_fields(article, self.organization["id"])
            files = self.client.files(article)
        except FigshareError as exc:
            raise FigshareImportError(f"{doi}: {exc}") from exc
        package, created = self._draft(fields, article.doi)
        report = Imported(article.doi, package["name"], "imported" if created else "completed")
        present = {r["id"] for r in package["resources"]}
        for resource_id, file in self._wanted(package["id"], files, report):
            if resource_id in present:
                continue
            self.echo(f"  {file.name}: downloading {file.size} bytes")
            try:
                self.echo(f"  {file.name}: {self._import_file(package, resource_id, file)}")
            except FigshareError as exc:
                raise FigshareImportError(f"{doi}: {exc}") from exc
            report.files.append(file.name)
            report.bytes += file.size
        finished_before = package["state"] == "active"
        if not finished_before:
            ckan_rows.patch_dataset(package["id"], state="active")
        if self.store is not None:  # objects follow the dataset, also those just added
            report.repaired = converge.converge_here(self.store, package["id"]).tagged
        if finished_before:
            report.outcome = "repaired" if report.files or report.repaired else "unchanged"
        return report

    def _draft(self, fields: dict[str, Any], doi: str) -> tuple[dict[str, Any], bool]:
        """The dataset, created as a draft when it does not exist yet."""
        try:
            package = ckan_rows.show_package(fields["id"], fresh=True)
        except tk.ObjectNotFound:
            package = ckan_rows.write_action("package_create", fields)
            return package, True
        if package["state"] == "deleted":
            raise FigshareImportError(
                f"{doi}: dataset {package['name']} was deleted on this site; restore or purge "
                "it to import it again"
            )
        return package, False

    def _wanted(
        self, package_id: str, files: Iterable[FigshareFile], report: Imported
    ) -> Iterator[tuple[str, FigshareFile]]:
        """The files to have in the dataset, by resource id; the others go to ``report.skipped``."""
        seen: dict[str, str] = {}
        for file in files:
            resource_id = resource_id_for(package_id, file.md5)
            if file.is_link_only:
                report.skipped.append(f"{file.name}: a link, not a file")
            elif not _MD5_RE.match(file.md5):
                raise FigshareImportError(
                    f"{report.doi}: figshare gives no MD5 for {file.name!r} ({file.id}), so its "
                    "download cannot be verified; nothing of it was imported"
                )
            elif file.md5 in seen:
                report.skipped.append(f"{file.name}: same bytes (MD5) as {seen[file.md5]}")
            elif clash := rules.id_clash(resource_id, package_id):
                raise FigshareImportError(f"{report.doi}: {file.name}: {clash}")
            elif _deleted_here(resource_id):
                report.skipped.append(f"{file.name}: its resource was deleted on this site")
            else:
                seen[file.md5] = file.name
                yield resource_id, file

    def _import_file(self, package: dict[str, Any], resource_id: str, file: FigshareFile) -> str:
        """Download, verify and place one file, then create its resource; says what it did."""
        tmp = config.tmp_dir() / f"figshare-{resource_id}.part"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.client.download(file) as chunks, open(tmp, "wb") as fd:
                received = _Received(file, fd)
                try:
                    if self.store is None:
                        sha256 = received.drain(chunks)
                        os.fsync(fd.fileno())  # on disk before the depot links to it
                    else:
                        result = self._upload(package, resource_id, chunks, received, tmp)
                finally:
                    received.close()  # no write after the file is closed
            fields = (
                read_dc_fields(tmp)[0] if resource_fields.is_dc_file({"name": file.name}) else {}
            )
            if self.store is None:
                depot_path = placement.figshare_path(package["name"], resource_id, file.name)
                moved = move_into_depot(
                    placement.ckan_path(resource_id), depot_path, locks.depot_lock(resource_id), tmp
                )
                if moved.action == "already" and sha256_of_file(moved.depot_path) != sha256:
                    raise FigshareError(
                        f"{moved.depot_path}, linked from CKAN's path of resource {resource_id} "
                        f"by an earlier run, is not {file.name!r} from figshare (SHA-256 "
                        "differs); delete the link and the file, run again"
                    )
                depot_path = moved.depot_path
                fields.update(url=file.name, url_type="upload", size=file.size, sha256=sha256)
                done = f"MD5 verified, in {depot_path}"
            else:
                where = f"s3://{result.bucket}/{result.key}"
                done = f"MD5 verified, {'already' if result.skipped else 'uploaded'} at {where}"
                fields.update(
                    url=placement.s3_url(
                        self.store, placement.ObjectLocation(result.bucket, result.key)
                    ),
                    url_type=resource_fields.S3_URL_TYPE,
                    **placement.s3_fields(self.store, "resource", result),
                )
            ckan_rows.write_action(
                "resource_create",
                {
                    "id": resource_id,
                    "package_id": package["id"],
                    "name": file.name,
                    "mimetype": mimetype_for(file.name),
                    "md5": file.md5,
                    "figshare_file_id": str(file.id),
                    **fields,
                },
            )
            if self.store is not None:
                record_verified_file(self.store, package["id"], resource_id, result)
            else:
                depot_files.record_file(package["id"], resource_id)
            return done
        finally:
            tmp.unlink(missing_ok=True)

    def _upload(
        self,
        package: dict[str, Any],
        resource_id: str,
        chunks: Iterable[bytes],
        received: _Received,
        tmp: Path,
    ) -> UploadResult:
        """Send the download to the bucket while it arrives; the object stays private."""
        location = placement.object_location(self.store, package["owner_org"], resource_id)
        if self.store.object_info(*location) is None:
            served = {"id": resource_id, "name": received.file.name}
            headers = resource_fields.object_headers(
                {**served, "mimetype": mimetype_for(served["name"])}
            )
            return self.store.upload_stream_verified(
                received.tee(chunks),
                received.file.size,
                *location,
                check=received.check,
                headers=headers,
            )
        # left by a run that stopped before creating the resource: compare, do not replace
        sha256 = received.drain(chunks)
        try:
            return self.store.upload_verified(tmp, *location, sha256=sha256)
        except ObjectConflictError as exc:
            raise FigshareError(
                f"{location} exists, belongs to no resource and is not "
                f"{received.file.name!r} from figshare ({exc}); check and delete that object, "
                "then run again"
            ) from exc


class _Received:
    """The bytes of one download as they arrive: written to the tmp file, MD5 and size checked.

    The MD5 and the write run in threads of their own (hashlib and file
    writes release the GIL), beside the download and the upload.
    """

    def __init__(self, file: FigshareFile, fd):
        self.file = file
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.fd = fd
        self._behind = [_InOrder(self.md5.update), _InOrder(fd.write)]

    def tee(self, chunks: Iterable[bytes], sha256: bool = False) -> Iterator[bytes]:
        try:
            for chunk in chunks:
                for worker in self._behind:
                    worker.put(chunk)
                if sha256:
                    self.sha256.update(chunk)
                self.size += len(chunk)
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        """Wait until every chunk is hashed and written (re-raises a failed write)."""
        for worker in self._behind:
            worker.close()
        if not self.fd.closed:
            self.fd.flush()  # the tmp file is complete for readers by its name

    def drain(self, chunks: Iterable[bytes]) -> str:
        """Receive the whole file; its SHA-256 once its size and MD5 are checked."""
        for _ in self.tee(chunks, sha256=True):
            pass
        self.check(self.size, self.sha256.hexdigest())
        return self.sha256.hexdigest()

    def check(self, size: int, sha256: str) -> None:
        """Refuse bytes that are not figshare's file (before anything is stored)."""
        self.close()
        file = self.file
        if size != file.size:
            raise FigshareError(
                f"The download of {file.name!r} ({file.id}) gave {size} bytes, figshare lists "
                f"{file.size}; nothing was stored"
            )
        if self.md5.hexdigest() != file.md5:
            raise FigshareError(
                f"The download of {file.name!r} ({file.id}) has MD5 {self.md5.hexdigest()}, "
                f"figshare lists {file.md5}; nothing was stored"
            )


class _InOrder:
    """Calls ``fn`` on each item in order in a thread of its own, at most ``depth`` items behind."""

    def __init__(self, fn: Callable[[bytes], Any], depth: int = 8):
        self.fn = fn
        self.depth = depth
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="figshare")
        self.pending: collections.deque[Future] = collections.deque()

    def put(self, item: bytes) -> None:
        self.pending.append(self.pool.submit(self.fn, item))
        if len(self.pending) > self.depth:
            self.pending.popleft().result()

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pending.clear()  # cancelled: a second close() has nothing left to raise


def _deleted_here(resource_id: str) -> bool:
    resource = model.Resource.get(resource_id)
    return resource is not None and resource.state == "deleted"


def import_all(
    dois: list[str],
    store: ObjectStore | None,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, int], list[str]]:
    """Import each DOI in turn (one that fails is one failed item, the others go on):
    the counts by outcome, and one line per failed DOI. ``echo`` gets what was done."""
    api_url = config.figshare_api_url()
    where = (
        "the circle's bucket"
        if store
        else f"{config.depots_path() / FIGSHARE_DEPOT} (no object store)"
    )
    echo(f"Importing {len(dois)} datasets from {api_url} into {where}")
    organization = ensure_organization()
    importer = ArticleImport(FigshareClient(api_url), store, organization, echo)
    counts = dict.fromkeys(("imported", "completed", "repaired", "unchanged", "failed"), 0)
    failures = []
    for doi in dois:
        echo(f"{doi}:")
        try:
            report = importer.run(doi)
        except (FigshareImportError, S3Error, DepotError, OSError, tk.ValidationError) as exc:
            problem = str(getattr(exc, "error_summary", None) or exc)
            if not problem.startswith(doi):
                problem = f"{doi}: {type(exc).__name__}: {problem}"
            counts["failed"] += 1
            failures.append(problem)
            echo(f"  failed: {problem}")
            continue
        counts[report.outcome] += 1
        if report.outcome == "unchanged":
            done = "already imported, nothing changed"
        else:
            done = f"{report.outcome}, {len(report.files)} files ({human_size(report.bytes)}) added"
        if report.repaired:
            done += f", visibility of {report.repaired} objects repaired"
        echo(f"  {report.name}: {done}")
        for skipped in report.skipped:
            echo(f"  skipped {skipped}")
    echo("Done: " + ", ".join(f"{n} {outcome}" for outcome, n in counts.items()))
    return counts, failures
