"""The figshare client against the local figshare-protocol server."""

from __future__ import annotations

import pytest

from ckanext.dcor_depot.storage.figshare_api import FigshareClient, FigshareError, parse_doi


def no_sleep(seconds: float) -> None:
    pass


@pytest.mark.parametrize(
    "doi",
    [
        "10.6084/m9.figshare.7771184.v2",
        "https://doi.org/10.6084/m9.figshare.7771184.v2",
        "doi:10.6084/M9.FIGSHARE.7771184.V2",
    ],
)
def test_doi_of_an_article_version(doi):
    assert parse_doi(doi) == (7771184, 2)


@pytest.mark.parametrize(
    "doi", ["10.6084/m9.figshare.7771184", "10.1000/xyz.v2", "m9.figshare.7771184.v2", ""]
)
def test_other_dois_are_refused_with_the_expected_form(doi):
    with pytest.raises(FigshareError, match=r"expected 10\.6084/m9\.figshare\.<article id>"):
        parse_doi(doi)


def test_all_files_come_from_the_paged_endpoint(figshare_server, tmp_path):
    entries = []
    for i in range(12):
        path = tmp_path / f"f{i}.txt"
        path.write_text(f"file {i}")
        entries.append(figshare_server.file_entry(path))
    doi = figshare_server.add_article(5, 1, entries)
    client = FigshareClient(figshare_server.api_url, interval=0, page_size=5)
    article = client.article(doi)
    assert [f.name for f in client.files(article)] == [f"f{i}.txt" for i in range(12)]
    pages = [p for _, p in figshare_server.requests if p.endswith("/files")]
    assert len(pages) == 3


def test_api_requests_are_at_least_a_second_apart(figshare_server):
    doi = figshare_server.add_article(6, 1, [])
    client = FigshareClient(figshare_server.api_url)
    for _ in range(3):
        client.article(doi)
    times = figshare_server.api_request_times()
    assert len(times) == 3
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:], strict=False))


def test_5xx_and_connection_errors_are_retried_with_back_off(figshare_server):
    doi = figshare_server.add_article(7, 1, [])
    figshare_server.faults["/v2/articles/7"] = [500, 503]
    waits = []
    client = FigshareClient(figshare_server.api_url, interval=0, sleep=waits.append)
    assert client.article(doi).id == 7
    assert [w for w in waits if w > 0] == [1.0, 2.0]

    figshare_server.faults["/v2/articles/7"] = [500] * 5
    with pytest.raises(FigshareError, match="after 3 attempts .*status 500"):
        FigshareClient(figshare_server.api_url, retries=2, sleep=no_sleep).article(doi)

    dead = FigshareClient("http://127.0.0.1:9/v2", retries=1, sleep=no_sleep)
    with pytest.raises(FigshareError, match="after 2 attempts .*ConnectionError"):
        dead.article(doi)


def test_unknown_article_is_a_clear_error(figshare_server):
    client = FigshareClient(figshare_server.api_url, interval=0)
    with pytest.raises(FigshareError, match="answered 404 .*check the DOI"):
        client.article("10.6084/m9.figshare.404.v1")


def test_download_follows_the_redirect_and_refuses_the_bot_challenge(figshare_server, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789" * 1000)
    entry = figshare_server.file_entry(path)
    figshare_server.add_article(8, 1, [entry])
    client = FigshareClient(figshare_server.api_url, interval=0)
    (file,) = client.files(client.article("10.6084/m9.figshare.8.v1"))
    with client.download(file) as chunks:
        assert b"".join(chunks) == path.read_bytes()
    assert [p for _, p in figshare_server.requests][-2:] == [
        f"/ndownloader/files/{file.id}",
        f"/storage/{file.id}",
    ]

    figshare_server.challenged.add(file.id)
    with pytest.raises(
        FigshareError, match="answered 202 .*challenge.*bot challenge, not the file"
    ):
        with client.download(file) as chunks:
            b"".join(chunks)
