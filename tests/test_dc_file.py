"""What the DC metadata job reads from real .rtdc files written with dclab."""

from __future__ import annotations

import pytest
from rq.timeouts import JobTimeoutException

from ckanext.dcor_depot import dc_file
from ckanext.dcor_depot.dc_file import dc_fields
from ckanext.dcor_depot.jobs.dc_metadata import without_credentials


def test_plain_file_is_rt_dc(rtdc_file):
    fields = dc_fields(str(rtdc_file(events=300)))
    assert fields["format"] == "RT-DC"
    assert fields["dc:experiment:event count"] == 300
    assert fields["dc:setup:flow rate"] == 0.04
    assert fields["dc:imaging:pixel size"] == 0.34


def test_fluorescence_file_is_rt_fdc(rtdc_file):
    fields = dc_fields(str(rtdc_file(fluorescence=True)))
    assert fields["format"] == "RT-FDC"
    assert fields["dc:fluorescence:channel count"] == 1


def test_truncated_file_raises(rtdc_file):
    path = rtdc_file()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError):
        dc_fields(str(path))


def test_a_timeout_while_dclab_reads_is_not_recorded_as_a_broken_file(monkeypatch, tmp_path):
    """RQ stops a job that runs too long by raising in it: that is no verdict on the file."""

    def too_long(*args):
        raise JobTimeoutException("Task exceeded maximum timeout value (10 seconds)")

    monkeypatch.setattr(dc_file, "dc_fields", too_long)
    with pytest.raises(JobTimeoutException):
        dc_file.read_dc_fields(tmp_path / "big.rtdc")


def test_the_signature_of_a_presigned_url_never_reaches_a_message():
    url = (
        "http://127.0.0.1:7480/circle-1/resource/abc/def/ghi?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA%2F20261202&X-Amz-Date=20261202T000000Z&X-Amz-Expires=3600"
        "&X-Amz-SignedHeaders=host&X-Amz-Signature=0123456789abcdef"
    )
    path_and_query = url.split("7480", 1)[1]
    messages = [
        f"dclab cannot read this file: OSError: cannot open {url}",
        f"dclab cannot read this file: MaxRetryError: Max retries exceeded with url: "
        f"{path_and_query} (Caused by ...)",
        f"dclab cannot read this file: HTTPError: 403 for url '{url.replace('&', '&amp;')}'",
    ]
    for message in messages:
        clean = without_credentials(message, url, "circle-1:resource/abc/def/ghi")
        assert "X-Amz-Signature" not in clean and "0123456789abcdef" not in clean, clean
        assert "AKIA" not in clean
        assert clean.startswith("dclab cannot read this file")
