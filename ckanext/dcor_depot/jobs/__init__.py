"""Background jobs run by CKAN's RQ workers, one module per job family."""
