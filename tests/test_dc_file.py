"""What the DC metadata job reads from real .rtdc files written with dclab."""

from __future__ import annotations

import pytest

from ckanext.dcor_depot.dc_file import dc_fields


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
