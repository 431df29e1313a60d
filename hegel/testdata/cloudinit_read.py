"""Reads gitmetal's metadata service with cloud-init's own code.

Usage: python3 cloudinit_read.py BASE_URL
Prints one JSON object: what cloud-init's EC2 crawler
(cloudinit.sources.helpers.ec2, the code DataSourceEc2 uses) and its NoCloud
seed reader (cloudinit.util.read_seeded, the code DataSourceNoCloud uses for
seedfrom=http://...) made of the answers, after the IMDSv2 token PUT that
DataSourceEc2 makes. The Go test decides what is right.
"""
import json
import sys

from cloudinit import url_helper, util
from cloudinit.sources import normalize_pubkey_data
from cloudinit.sources.helpers import ec2

base = sys.argv[1]

# DataSourceEc2._refresh_api_token: PUT with the TTL header.
resp = url_helper.readurl(
    base + "/latest/api/token",
    headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"},
    request_method="PUT",
    timeout=10,
    retries=0,
)
token = resp.contents.decode()


def headers(url):
    return {"X-aws-ec2-metadata-token": token}


md = ec2.get_instance_metadata(
    api_version="2009-04-04", metadata_address=base, headers_cb=headers, timeout=10, retries=0
)
ud = ec2.get_instance_userdata(
    api_version="2009-04-04", metadata_address=base, headers_cb=headers, timeout=10, retries=0
)
nmd, nud, nvd = util.read_seeded(base + "/nocloud/", timeout=10, retries=0)

out = {
    "ec2": {
        "meta-data": md,
        "user-data": ud.decode() if isinstance(ud, bytes) else ud,
        "public-keys": sorted(normalize_pubkey_data(md.get("public-keys", {}))),
    },
    "nocloud": {
        "meta-data": nmd,
        "user-data": nud.decode() if nud is not None else None,
        "vendor-data": nvd.decode() if nvd is not None else None,
        "public-keys": sorted(normalize_pubkey_data(nmd.get("public-keys", []))),
    },
}

# The network config, when served, through cloud-init's own parser.
try:
    nc = url_helper.readurl(base + "/nocloud/network-config", timeout=10, retries=0)
except url_helper.UrlError as e:
    out["network-config"] = {"error": e.code}
else:
    from cloudinit.net.network_state import parse_net_config_data

    state = parse_net_config_data(util.load_yaml(nc.contents))
    out["network-config"] = {
        "interfaces": {
            name: {
                "mac": i.get("mac_address"),
                "subnets": [
                    {k: s.get(k) for k in ("type", "address", "prefix", "netmask", "gateway", "routes", "dns_nameservers", "dns_search") if s.get(k)}
                    for s in i.get("subnets", [])
                ],
            }
            for name, i in state.iter_interfaces_dict().items()
        } if hasattr(state, "iter_interfaces_dict") else {
            i["name"]: {
                "mac": i.get("mac_address"),
                "subnets": [
                    {k: s.get(k) for k in ("type", "address", "prefix", "netmask", "gateway", "routes", "dns_nameservers", "dns_search") if s.get(k)}
                    for s in i.get("subnets", [])
                ],
            }
            for i in state.iter_interfaces()
        },
        "routes": [dict(r) for r in state.iter_routes()],
    }

json.dump(out, sys.stdout, indent=1, sort_keys=True, default=str)
