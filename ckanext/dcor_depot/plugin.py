"""The dcor_depot plugin: CKAN's view of where the files of DCOR live."""

from __future__ import annotations

import logging

import ckan.plugins as p
import ckan.plugins.toolkit as tk

from . import config

log = logging.getLogger(__name__)


@tk.blanket.config_declarations
@tk.blanket.validators
@tk.blanket.cli
class DCORDepotPlugin(p.SingletonPlugin):
    p.implements(p.IConfigurable, inherit=True)

    # IConfigurable
    def configure(self, config_):
        settings = config.s3_settings()
        if settings is None:
            log.warning(
                "dcor_depot: dcor_object_store.endpoint_url is not set: "
                "S3 features (uploads, visibility, presigned downloads) are off"
            )
        else:
            log.info("dcor_depot: object store at %s", settings.endpoint_url)
