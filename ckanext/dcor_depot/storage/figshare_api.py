"""figshare as a read-only source of articles and files (its public API v2).

Like the S3 layer (``s3/``), it knows nothing of CKAN. It is polite to figshare
(at most one request per second to the API) and strict about what it gets:
retries with back-off on 5xx answers and connection errors, and a 2xx answer
that is not the file (figshare's bot challenge) is an error, never an empty
file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests

#: figshare's public API.
DEFAULT_API_URL = "https://api.figshare.com/v2"
#: Seconds between two requests to the API: figshare asks for at most one per second.
API_INTERVAL = 1.0
#: Files per page of the paged files endpoint.
PAGE_SIZE = 100
DOWNLOAD_CHUNK = 1024**2
_DOI_RE = re.compile(r"^10\.6084/m9\.figshare\.(\d+)\.v(\d+)$")
_RETRY_STATUS = {429, 500, 502, 503, 504}


class FigshareError(Exception):
    """figshare did not give what was asked for; the message says what and what to do."""


@dataclasses.dataclass(frozen=True)
class FigshareFile:
    id: int
    name: str
    size: int
    #: figshare's ``supplied_md5``, else its ``computed_md5``; "" when it has neither
    md5: str
    download_url: str
    is_link_only: bool

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> FigshareFile:
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            size=int(data.get("size") or 0),
            md5=str(data.get("supplied_md5") or data.get("computed_md5") or "").lower(),
            download_url=str(data.get("download_url") or ""),
            is_link_only=bool(data.get("is_link_only")),
        )


@dataclasses.dataclass(frozen=True)
class Article:
    """One version of a figshare article, as the API describes it."""

    id: int
    version: int
    doi: str
    title: str
    #: HTML
    description: str
    references: list[str]
    license_name: str
    license_url: str
    authors: list[str]


def parse_doi(doi: str) -> tuple[int, int]:
    """``(article id, version)`` of a versioned figshare DOI (also given as a doi.org URL)."""
    bare = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:)", "", doi.strip(), flags=re.I).lower()
    match = _DOI_RE.match(bare)
    if match is None:
        raise FigshareError(
            f"{doi!r} is not the DOI of a version of a figshare article: expected "
            "10.6084/m9.figshare.<article id>.v<version>, e.g. 10.6084/m9.figshare.7771184.v2"
        )
    return int(match[1]), int(match[2])


class FigshareClient:
    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        *,
        interval: float = API_INTERVAL,
        page_size: int = PAGE_SIZE,
        retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 60,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api_url = api_url.rstrip("/")
        self.interval = interval
        self.page_size = page_size
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._sleep = sleep
        self._last_api_request = -float("inf")
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "ckanext-dcor_depot figshare import"

    def article(self, doi: str) -> Article:
        article_id, version = parse_doi(doi)
        data = self._api_json(f"/articles/{article_id}/versions/{version}", f"article {doi}")
        license_ = data.get("license") or {}
        return Article(
            id=int(data["id"]),
            version=int(data.get("version") or version),
            doi=str(data.get("doi") or doi),
            title=str(data.get("title") or ""),
            description=str(data.get("description") or ""),
            references=[str(r) for r in data.get("references") or []],
            license_name=str(license_.get("name") or ""),
            license_url=str(license_.get("url") or ""),
            authors=[str(a["full_name"]) for a in data.get("authors") or [] if a.get("full_name")],
        )

    def files(self, article: Article) -> list[FigshareFile]:
        """Every file of the article: the paged files endpoint (the article lists 10 at most)."""
        files = []
        page = 1
        while True:
            path = f"/articles/{article.id}/versions/{article.version}/files"
            query = f"?page={page}&page_size={self.page_size}"
            batch = self._api_json(path + query, f"the files of {article.doi} (page {page})")
            files += [FigshareFile.from_api(entry) for entry in batch]
            if len(batch) < self.page_size:
                return files
            page += 1

    @contextlib.contextmanager
    def download(self, file: FigshareFile) -> Iterator[Iterator[bytes]]:
        """The bytes of a file, as an iterator of chunks (redirects followed)."""
        what = f"file {file.name!r} ({file.id})"
        response = self._get(file.download_url, what, stream=True)
        try:
            if response.status_code != 200 or "x-amzn-waf-action" in response.headers:
                action = response.headers.get("x-amzn-waf-action", "none")
                raise FigshareError(
                    f"figshare answered {response.status_code} (x-amzn-waf-action: {action}) "
                    f"instead of the bytes of {what}: a bot challenge, not the file. Try again "
                    "later or from another network"
                )
            yield self._chunks(response, what)
        finally:
            response.close()

    def _chunks(self, response: requests.Response, what: str) -> Iterator[bytes]:
        try:
            yield from response.iter_content(DOWNLOAD_CHUNK)
        except requests.RequestException as exc:
            raise FigshareError(f"The download of {what} broke off: {exc}") from exc

    def _api_json(self, path: str, what: str) -> Any:
        response = self._get(self.api_url + path, what, api=True)
        try:
            return response.json()
        except ValueError as exc:
            raise FigshareError(
                f"figshare's answer for {what} is not JSON (status {response.status_code}); "
                f"is {self.api_url} figshare's API?"
            ) from exc

    def _get(self, url: str, what: str, api: bool = False, stream: bool = False):
        """GET with retries and back-off on 5xx and connection errors; 4xx is an error."""
        for attempt in range(self.retries + 1):
            if api:
                self._sleep(max(0.0, self._last_api_request + self.interval - time.monotonic()))
            try:
                response = self.session.get(url, stream=stream, timeout=self.timeout)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in _RETRY_STATUS:
                    break
                problem = f"status {response.status_code}"
                response.close()
            finally:
                if api:  # counted from the answer: the next request arrives >= 1 s after this one
                    self._last_api_request = time.monotonic()
            if attempt == self.retries:
                raise FigshareError(
                    f"figshare gave no answer for {what} after {attempt + 1} attempts "
                    f"(last: {problem}); try again later"
                )
            self._sleep(self.backoff * 2**attempt)
        if response.status_code >= 400:
            response.close()
            hint = ": check the DOI" if response.status_code == 404 else ""
            raise FigshareError(f"figshare answered {response.status_code} for {what}{hint}")
        return response
