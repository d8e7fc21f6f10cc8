#!/usr/bin/env python3
"""A country database of N random IPv4 /24s and /16s over 60 countries (PyPI mmdb-writer),
shaped like GeoLite2-Country, with 127.0.0.0/8 in DE: for bench/geoip.sh.

    make_countries.py OUT.mmdb N
"""
import random
import sys

from mmdb_writer import MMDBWriter
from netaddr import IPNetwork, IPSet

out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
codes = [a + b for a, b in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 3, "ZYXWVUTSRQPONMLKJIHGFEDCBA" * 3)][:60]
by_country = {c: [] for c in codes}
for _ in range(n):
    a, b, c = rng.randrange(1, 224), rng.randrange(256), rng.randrange(256)
    if a == 127:
        continue
    net = f"{a}.{b}.{c}.0/24" if rng.random() < 0.9 else f"{a}.{b}.0.0/16"
    by_country[rng.choice(codes)].append(IPNetwork(net))
w = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", languages=["en"],
               description="hlsgate bench countries", ipv4_compatible=True)
for cc, nets in by_country.items():
    w.insert_network(IPSet(nets), {"country": {"iso_code": cc}})
w.insert_network(IPSet(["127.0.0.0/8"]), {"country": {"iso_code": "DE"}})
w.to_db_file(out)
