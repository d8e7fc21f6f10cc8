#!/usr/bin/env python3
"""Write a MaxMind-format country database with PyPI's mmdb-writer (a writer nobody here
wrote), shaped like GeoLite2-Country (`country.iso_code`), for the access-rule tests.

    make_mmdb.py OUT.mmdb CIDR=CC [CIDR=CC ...]

Addresses outside every CIDR are not in the database (the edge calls them XX).
"""
import os
import sys

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def main() -> None:
    out, pairs = sys.argv[1], sys.argv[2:]
    w = MMDBWriter(
        ip_version=6,
        database_type="GeoLite2-Country",
        languages=["en"],
        description="hlsgate test countries",
        ipv4_compatible=True,
    )
    for pair in pairs:
        cidr, cc = pair.split("=")
        w.insert_network(IPSet([cidr]), {"country": {"iso_code": cc, "names": {"en": cc}}})
    # Written beside, then renamed: a watcher never reads half a file.
    w.to_db_file(out + ".tmp")
    os.replace(out + ".tmp", out)


main()
