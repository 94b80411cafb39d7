"""Dataset kind "rca-synthetic": generated network fault tickets in 13 root-cause categories.

Each category has a few variants. A variant owns one error code and one log line that appear in its tickets,
and the cause and resolution it yields, so the inputs determine the target up to slot values (device,
interface, address, ...) that the inputs also show: a small model can learn the mapping.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from joulebench.data import DATASET_KINDS, DatasetError, Splits
from joulebench.data.tickets import read_tickets, split_tickets
from joulebench.io import write_jsonl

TICKET_KEYS = ("ticket_id", "category", "error_codes", "symptoms", "logs", "metadata", "cause", "resolution")
METADATA = "device={device} vendor={vendor} site={site} severity={severity} opened={opened}"


@dataclass(frozen=True)
class Variant:
    code: str
    log: str
    cause: str
    resolution: str


@dataclass(frozen=True)
class Category:
    name: str
    codes: tuple[str, ...]
    symptoms: tuple[str, ...]
    logs: tuple[str, ...]
    variants: tuple[Variant, ...]


CATEGORIES: tuple[Category, ...] = (
    Category(
        name="fiber-cut",
        codes=("LOS", "LINK-DOWN", "ALM-OPT-RX"),
        symptoms=("total traffic loss on an uplink", "customers behind the site unreachable",
                  "protection switch triggered", "optical receive power at -40 dBm"),
        logs=("{t} {device} %LINK-3-UPDOWN: {iface} changed state to down",
              "{t} {device} %PROT-4-SWITCH: {iface} traffic moved to protect path",
              "{t} {device} %OPTIC-4-ALARM: {iface} loss of light"),
        variants=(
            Variant("OTDR-BREAK", "{t} {device} %OTDR-2-BREAK: {iface} fiber break at {km} km",
                    "Fiber cut {km} km out on the span behind {iface}.",
                    "Send a field team to splice the span at {km} km and check light levels."),
            Variant("LOS-MULTI", "{t} {device} %OPTIC-2-RX_LOS: {iface} and 3 other ports lost signal",
                    "Civil works near {site} cut a cable carrying {iface} and other spans.",
                    "Reroute traffic to diverse paths and have the duct near {site} repaired."),
            Variant("PATCH-BREAK", "{t} {device} %OPTIC-3-RX_LOW: {iface} rx power below -30 dBm",
                    "Broken patch cord on {iface} at the {site} patch panel.",
                    "Replace the patch cord on {iface} and clean the connectors."),
        ),
    ),
    Category(
        name="power-supply-failure",
        codes=("PSU-ALARM", "ENV-PWR", "REDUNDANCY-LOST"),
        symptoms=("device rebooted unexpectedly", "redundancy alarm on the chassis",
                  "power LED amber", "chassis running on one supply"),
        logs=("{t} {device} %PLATFORM-4-PS_REDUNDANCY: power redundancy lost",
              "{t} {device} %ENV-4-VOLTAGE: 12V rail at {volts}V",
              "{t} {device} %SYS-5-RESTART: system restarted"),
        variants=(
            Variant("PWR-PSU-FAULT", "{t} {device} %PLATFORM-2-PS_FAIL: {psu} output failure",
                    "Power supply {psu} in {device} failed.",
                    "Replace power supply {psu} in {device} and confirm redundancy is restored."),
            Variant("PWR-INPUT-LOST", "{t} {device} %ENV-2-PS_INPUT: {psu} input voltage 0V",
                    "The input feed to {psu} was lost after a breaker tripped at {site}.",
                    "Reset the breaker feeding {psu} at {site} and check the PDU load."),
            Variant("PWR-OVERTEMP", "{t} {device} %ENV-1-TEMP: {psu} shut down at {temp}C",
                    "{psu} in {device} overheated ({temp}C) because a fan failed.",
                    "Replace the fan tray and {psu} in {device}, then check the inlet temperature."),
        ),
    ),
    Category(
        name="bgp-misconfiguration",
        codes=("BGP-ADJCHANGE", "BGP-NOTIFY", "ROUTES-WITHDRAWN"),
        symptoms=("prefixes missing from the routing table", "traffic to a partner network dropped",
                  "BGP session flapping", "upstream routes withdrawn"),
        logs=("{t} {device} %BGP-5-ADJCHANGE: neighbor {peer_ip} Down",
              "{t} {device} %BGP-5-ADJCHANGE: neighbor {peer_ip} Idle",
              "{t} {device} %ROUTING-4-WITHDRAW: routes via {peer_ip} withdrawn"),
        variants=(
            Variant("BGP-AS-MISMATCH", "{t} {device} %BGP-3-NOTIFICATION: to {peer_ip} 2/2 wrong AS{asn}",
                    "Neighbor {peer_ip} has the wrong remote AS; the peer is AS{asn}.",
                    "Set remote-as {asn} on the neighbor and reset the session."),
            Variant("BGP-AUTH-FAIL", "{t} {device} %TCP-6-BADAUTH: invalid MD5 digest from {peer_ip}:179",
                    "MD5 password mismatch with BGP neighbor {peer_ip}.",
                    "Set the same MD5 password on both routers and clear the session."),
            Variant("BGP-MAXPFX", "{t} {device} %BGP-4-MAXPFX: {peer_ip} sent over {limit} prefixes, closed",
                    "The maximum-prefix limit of {limit} for {peer_ip} is too low.",
                    "Raise the maximum-prefix limit on {device} and re-enable the session."),
        ),
    ),
    Category(
        name="dns-resolution-failure",
        codes=("DNS-TIMEOUT", "SERVFAIL", "NAME-RES-FAIL"),
        symptoms=("users cannot open websites by name", "ping by IP works but names fail",
                  "applications time out at login", "mail delivery delayed"),
        logs=("{t} {device} probe: resolve {domain} failed",
              "{t} {device} dns: query {domain} timed out",
              "{t} {device} app: login failed, cannot resolve {domain}"),
        variants=(
            Variant("DNS-SRV-DOWN", "{t} {device} %DNS-4-NORESP: resolver {dns_ip} not responding",
                    "Resolver {dns_ip} is down, so name lookups time out.",
                    "Restart the DNS service on {dns_ip} and add a secondary resolver."),
            Variant("DNS-ZONE-EXPIRED", "{t} {device} dns: zone {domain} expired on {dns_ip}, SERVFAIL",
                    "Zone {domain} expired on {dns_ip} after failed zone transfers.",
                    "Repair the zone transfer and reload zone {domain}."),
            Variant("DNS-ACL-BLOCK", "{t} {device} %ACL-6-DENY: udp/53 to {dns_ip} denied",
                    "An ACL on {device} blocks DNS traffic to {dns_ip}.",
                    "Permit UDP and TCP port 53 to the resolver in the ACL."),
        ),
    ),
    Category(
        name="dhcp-pool-exhaustion",
        codes=("DHCP-NOADDR", "DHCPD-WARN", "APIPA-CLIENTS"),
        symptoms=("new clients get 169.254 addresses", "laptops cannot join the network",
                  "existing users unaffected", "wifi clients stuck obtaining an address"),
        logs=("{t} {device} dhcpd: DHCPDISCOVER on vlan {vlan}: no free leases",
              "{t} {device} %DHCPD-6-UTIL: pool {scope} usage 100%",
              "{t} {device} %AUTH-5-FAIL: client on vlan {vlan} has a 169.254 address"),
        variants=(
            Variant("DHCP-POOL-FULL", "{t} {device} %DHCPD-4-NO_ADDR: pool {scope} has no free address",
                    "DHCP pool {scope} on {device} is exhausted by client growth.",
                    "Extend the pool or add a second scope on {device}."),
            Variant("DHCP-LEASE-LONG", "{t} {device} %DHCPD-6-LEASES: pool {scope} full, 8-day leases idle",
                    "The 8-day lease time keeps stale leases and exhausts pool {scope}.",
                    "Shorten the lease time to 4 hours and clear stale bindings."),
            Variant("DHCP-STARVATION", "{t} {device} %DHCPD-4-STARVE: vlan {vlan} {rate}/s, {scope} drained",
                    "A rogue client on VLAN {vlan} drained pool {scope} with forged requests.",
                    "Enable DHCP snooping with rate limits on VLAN {vlan} and clear the bindings."),
        ),
    ),
    Category(
        name="mtu-mismatch",
        codes=("FRAG-DROP", "GIANTS", "PMTU-FAIL"),
        symptoms=("small pings work but large transfers hang", "web pages load partially",
                  "file copies stall", "VPN traffic fails for large packets"),
        logs=("{t} {device} %IF-5-STATS: {iface} giants rising",
              "{t} {device} %IP-4-FRAG: fragmentation needed on {iface}",
              "{t} {device} app: large transfers stall over {iface}"),
        variants=(
            Variant("MTU-L2-MISMATCH", "{t} {device} %IF-4-GIANT: {iface} drops {peer_mtu}B, mtu {mtu}",
                    "MTU mismatch on {iface}: {device} uses {mtu}, the peer sends {peer_mtu}.",
                    "Set MTU {peer_mtu} on {iface} to match the peer."),
            Variant("MTU-TUNNEL", "{t} {device} %TUN-4-DF: tunnel over {iface} drops DF packets over {mtu}B",
                    "Tunnel overhead over {iface} pushes packets above MTU {mtu}.",
                    "Lower the tunnel MTU and clamp TCP MSS on the tunnel over {iface}."),
            Variant("MTU-PMTUD-BLOCKED", "{t} {device} %ACL-6-DENY: icmp frag-needed denied on {iface}",
                    "ICMP fragmentation-needed is blocked on {iface}, breaking path MTU discovery.",
                    "Permit ICMP type 3 code 4 on {iface} and clamp TCP MSS."),
        ),
    ),
    Category(
        name="duplex-mismatch",
        codes=("CRC-ERR", "LATE-COLL", "IF-ERRORS"),
        symptoms=("slow file transfers", "packet loss on one access port",
                  "choppy VoIP calls", "throughput far below link speed"),
        logs=("{t} {device} %IF-4-LATECOLL: {iface} late collisions",
              "{t} {device} %LINK-3-UPDOWN: {iface} flapped 4 times",
              "{t} {device} %QOS-4-DROPS: {iface} output drops rising"),
        variants=(
            Variant("DUPLEX-MISMATCH", "{t} {device} %CDP-4-DUPLEX_MISMATCH: {iface} half duplex, peer full",
                    "Duplex mismatch on {iface}: {device} runs half duplex, the peer full.",
                    "Set both ends of {iface} to auto-negotiate or to full duplex."),
            Variant("IF-CRC-CABLE", "{t} {device} %IF-3-CRC: {iface} {errors} CRC errors in 5 min",
                    "A faulty copper cable on {iface} causes CRC errors.",
                    "Replace the cable on {iface} and clear the counters on {device}."),
            Variant("IF-SFP-DEGRADED", "{t} {device} %SFP-4-DDM: {iface} tx power low, {errors} input errors",
                    "A degraded SFP in {iface} produces input errors.",
                    "Swap the SFP in {iface} of {device} and watch the error counters."),
        ),
    ),
    Category(
        name="router-cpu-overload",
        codes=("CPU-HIGH", "CPU-HOG", "CTRL-PLANE-DROP"),
        symptoms=("SSH to the router is very slow", "routing keepalives missed",
                  "intermittent loss through the device", "monitoring shows CPU near 100%"),
        logs=("{t} {device} %SYS-3-CPUHOG: task ran for 2400 ms",
              "{t} {device} %PLATFORM-4-CPU: 5-min CPU average {cpu}%",
              "{t} {device} %SSH-4-SLOW: management session not responding"),
        variants=(
            Variant("CPU-BGP-SCAN", "{t} {device} %SYS-1-CPURISING: CPU {cpu}%, top process BGP Scanner",
                    "BGP route churn keeps the BGP scanner at {cpu}% CPU on {device}.",
                    "Dampen the flapping prefixes and filter routes on {device}."),
            Variant("CPU-PUNT-FLOOD", "{t} {device} %COPP-4-DROP: punt rate high, CPU {cpu}% in IP Input",
                    "Traffic punted to the CPU (IP Input at {cpu}%) overloads {device}.",
                    "Apply control-plane policing on {device} and stop the punted traffic source."),
            Variant("CPU-SNMP-POLL", "{t} {device} %SYS-4-CPUHOG: SNMP ENGINE at {cpu}% CPU",
                    "Aggressive SNMP polling drives the CPU of {device} to {cpu}%.",
                    "Reduce the SNMP polling rate and restrict SNMP access on {device}."),
        ),
    ),
    Category(
        name="licence-expiry",
        codes=("LIC-EXPIRED", "SMART-LIC", "FEATURE-DISABLED"),
        symptoms=("VPN tunnels dropped after a reboot", "feature commands rejected",
                  "throughput capped at 100 Mbps", "compliance warning on the dashboard"),
        logs=("{t} {device} %LICENSE-4-DISABLED: feature {feature} disabled",
              "{t} {device} %FEATURE-3-DENIED: {feature} configuration rejected",
              "{t} {device} %LICENSE-6-COUNT: {feature} out of compliance"),
        variants=(
            Variant("LIC-EVAL-END", "{t} {device} %LICENSE-2-EXPIRED: evaluation licence {feature} expired",
                    "The evaluation licence for {feature} on {device} expired.",
                    "Install a permanent {feature} licence on {device} and re-enable the feature."),
            Variant("LIC-SUB-LAPSED", "{t} {device} %LICENSE-1-SUB: {feature} lapsed {days} days ago",
                    "The {feature} subscription lapsed {days} days ago and was not renewed.",
                    "Renew the {feature} subscription and sync the licences on {device}."),
            Variant("LIC-SERVER-UNREACH", "{t} {device} %SMART_LIC-3-RENEW: {feature} server unreachable",
                    "{device} could not renew {feature} because the licence server is unreachable.",
                    "Restore access from {device} to the licence server and renew {feature}."),
        ),
    ),
    Category(
        name="tls-certificate-expiry",
        codes=("TLS-HANDSHAKE-FAIL", "CERT-INVALID", "HTTPS-503"),
        symptoms=("browsers show a certificate warning", "API clients fail the TLS handshake",
                  "VPN users cannot connect", "HTTPS health check down"),
        logs=("{t} {device} tls: handshake failed for {cn} (alert 42)",
              "{t} {device} vpn: client authentication failed for {cn}",
              "{t} {device} https: health check on {cn} failed"),
        variants=(
            Variant("CERT-EXPIRED", "{t} {device} ssl: certificate CN={cn} expired {days} days ago",
                    "The certificate for {cn} expired {days} days ago.",
                    "Install a new certificate for {cn} on {device} and add expiry alerts."),
            Variant("CERT-CHAIN-MISSING", "{t} {device} ssl: cannot verify {cn}: intermediate CA missing",
                    "The renewed certificate for {cn} was installed without its intermediate CA.",
                    "Install the full certificate chain for {cn} on {device}."),
            Variant("CERT-CA-EXPIRED", "{t} {device} pki: CA certificate expired, chain of {cn} invalid",
                    "The internal CA certificate expired, invalidating {cn}.",
                    "Renew the internal CA, reissue the certificate for {cn} and distribute the new CA."),
        ),
    ),
    Category(
        name="ospf-adjacency-failure",
        codes=("OSPF-ADJCHG", "OSPF-NBR-DOWN", "ROUTE-LOSS"),
        symptoms=("remote sites unreachable", "routes missing from the routing table",
                  "traffic on a longer backup path", "OSPF neighbor count dropped"),
        logs=("{t} {device} %OSPF-5-ADJCHG: nbr {peer_ip} on {iface} FULL to DOWN",
              "{t} {device} %OSPF-5-ADJCHG: nbr {peer_ip} stuck in INIT",
              "{t} {device} %ROUTING-4-LOSS: routes via {peer_ip} removed"),
        variants=(
            Variant("OSPF-AREA-MISMATCH", "{t} {device} %OSPF-4-ERRRCV: area mismatch, {peer_ip} {iface}",
                    "OSPF area mismatch with neighbor {peer_ip} on {iface}.",
                    "Put both ends of the link in the same OSPF area."),
            Variant("OSPF-TIMER-MISMATCH", "{t} {device} %OSPF-4-TIMERS: hello mismatch, {peer_ip} {iface}",
                    "OSPF hello/dead timer mismatch with {peer_ip} on {iface}.",
                    "Set the same hello and dead intervals on both ends."),
            Variant("OSPF-AUTH-FAIL", "{t} {device} %OSPF-4-AUTH: auth failure from {peer_ip} on {iface}",
                    "OSPF authentication key mismatch with {peer_ip} on {iface}.",
                    "Configure the same OSPF key on both ends and check the adjacency."),
        ),
    ),
    Category(
        name="vlan-misconfiguration",
        codes=("VLAN-MISMATCH", "STP-BLOCK", "NO-GATEWAY"),
        symptoms=("users on one floor have no connectivity", "new access point cannot reach its controller",
                  "printers unreachable after a change", "hosts cannot reach the gateway"),
        logs=("{t} {device} %SPANTREE-2-BLOCK_PVID: blocking {iface} on vlan {vlan}",
              "{t} {device} %MAC-4-NOLEARN: no MAC learned on vlan {vlan}",
              "{t} {device} %ARP-4-INCOMPLETE: gateway unresolved on vlan {vlan}"),
        variants=(
            Variant("VLAN-NOT-ALLOWED", "{t} {device} %SW-4-VLAN: vlan {vlan} not allowed on trunk {iface}",
                    "VLAN {vlan} is missing from the allowed list of trunk {iface}.",
                    "Add VLAN {vlan} to the allowed VLANs of trunk {iface}."),
            Variant("NATIVE-VLAN-MISMATCH", "{t} {device} %CDP-4-NATIVE: {iface} native vlan {vlan} != peer",
                    "Native VLAN mismatch on trunk {iface} (local native VLAN {vlan}).",
                    "Set the same native VLAN on both ends of trunk {iface}."),
            Variant("VLAN-WRONG-ACCESS", "{t} {device} %SW-5-PORT: {iface} in access vlan {vlan}, no gateway",
                    "Access port {iface} is in the wrong VLAN {vlan}.",
                    "Move {iface} on {device} to the correct user VLAN and bounce the port."),
        ),
    ),
    Category(
        name="firmware-bug",
        codes=("SYS-CRASH", "TRACEBACK", "WATCHDOG"),
        symptoms=("device rebooted without a power event", "crash dump written",
                  "services restart every few days", "memory use climbs steadily"),
        logs=("{t} {device} %SYS-5-RELOAD: unexpected reload",
              "{t} {device} %SYS-3-TRACEBACK: traceback in {process}",
              "{t} {device} %SYS-6-BOOT: booted image {version}"),
        variants=(
            Variant("FW-MEMLEAK", "{t} {device} %SYS-2-MALLOCFAIL: {process} out of memory, {version}",
                    "A memory leak in {process} in firmware {version}.",
                    "Upgrade {device} from {version} to the fixed release in a maintenance window."),
            Variant("FW-CRASH", "{t} {device} %SYS-0-CRASH: {process} crashed (signal 11), {version}",
                    "A known defect in firmware {version} crashes {process}.",
                    "Upgrade from {version} to the patched release and send the crash dump to the vendor."),
            Variant("FW-WATCHDOG", "{t} {device} %SYS-1-WATCHDOG: {process} hung, reloading, {version}",
                    "A {process} hang in firmware {version} triggered a watchdog reload.",
                    "Apply the vendor hotfix for {version} and disable the affected feature until upgraded."),
        ),
    ),
)

ROLES = ("core-rtr", "edge-rtr", "agg-rtr", "dist-sw", "acc-sw", "fw")
VENDORS = ("cisco", "juniper", "arista", "nokia", "huawei")
SITES = ("fra1", "ams2", "lon3", "par1", "muc2", "nyc4", "sin1", "mad2")
INTERFACE_FORMATS = ("Gi0/{}", "Te1/{}", "xe-0/0/{}", "Eth1/{}", "ge-0/0/{}")
FEATURES = ("SEC-K9", "ADV-IP", "MPLS-VPN", "IPSEC-VPN", "APPX")
PROCESSES = ("bgpd", "ospfd", "snmpd", "fib-mgr", "lldpd", "ifmgr")
DOMAINS = ("corp.example.net", "mail.example.com", "erp.example.org", "portal.example.net", "crm.example.com")
EPOCH = datetime(2024, 1, 1)


def generate_tickets(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` tickets, categories as balanced as ``n`` allows, identical for the same seed."""
    if n < 0:
        raise ValueError(f"number of tickets must be non-negative, got {n}")
    rng = random.Random(seed)
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    rng.shuffle(categories)
    return [make_ticket(f"TKT-{i + 1:06d}", category, rng) for i, category in enumerate(categories)]


def make_ticket(ticket_id: str, category: Category, rng: random.Random) -> dict[str, str]:
    variant = rng.choice(category.variants)
    slots = random_slots(rng)
    lines = [variant.log, rng.choice(category.logs)]
    rng.shuffle(lines)
    opened = EPOCH + timedelta(minutes=rng.randrange(366 * 24 * 60))
    # Log lines precede the ticket by a few minutes and run in time order.
    first = opened - timedelta(seconds=rng.randrange(120, 1800))
    stamps = [first, first + timedelta(seconds=rng.randrange(1, 90))]
    logs = [line.format(t=f"{stamp:%H:%M:%S}", **slots) for line, stamp in zip(lines, stamps, strict=True)]
    return {
        "ticket_id": ticket_id,
        "category": category.name,
        "error_codes": f"{variant.code}, {rng.choice(category.codes)}",
        "symptoms": "; ".join(rng.sample(category.symptoms, 2)),
        "logs": "\n".join(logs),
        "metadata": METADATA.format(opened=opened.strftime("%Y-%m-%dT%H:%MZ"), **slots),
        "cause": variant.cause.format(**slots),
        "resolution": variant.resolution.format(**slots),
    }


def random_slots(rng: random.Random) -> dict[str, str | int]:
    """Values for every slot any template uses, so that tickets of one variant still differ."""
    mtu = rng.choice((1400, 1500))
    return {
        "device": f"{rng.choice(ROLES)}-{rng.randint(1, 40):02d}",
        "vendor": rng.choice(VENDORS),
        "site": rng.choice(SITES),
        "severity": rng.choice(("P1", "P2", "P2", "P3", "P4")),
        "iface": rng.choice(INTERFACE_FORMATS).format(rng.randint(0, 47)),
        "peer_ip": f"10.{rng.randint(0, 40)}.{rng.randint(0, 99)}.{rng.randint(1, 99)}",
        "dns_ip": f"10.{rng.randint(0, 40)}.{rng.randint(0, 99)}.{rng.choice((53, 10, 2))}",
        "asn": rng.randint(64512, 65534),
        "limit": rng.choice((100, 500, 1000, 5000)),
        "psu": f"PS{rng.randint(1, 2)}",
        "temp": rng.randint(72, 95),
        "volts": f"{rng.uniform(9.0, 11.2):.1f}",
        "km": f"{rng.uniform(0.3, 40.0):.1f}",
        "scope": f"10.{rng.randint(0, 40)}.{rng.randint(0, 99)}.0/24",
        "vlan": rng.randint(10, 4000),
        "rate": rng.randint(200, 5000),
        "errors": rng.randint(300, 90000),
        "mtu": mtu,
        "peer_mtu": rng.choice((9000, 9216)) if mtu == 1500 else 1500,
        "cpu": rng.randint(91, 100),
        "feature": rng.choice(FEATURES),
        "days": rng.randint(1, 60),
        "domain": rng.choice(DOMAINS),
        "cn": f"{rng.choice(('vpn', 'api', 'www', 'portal'))}.{rng.choice(SITES)}.example.net",
        "process": rng.choice(PROCESSES),
        "version": f"{rng.randint(15, 24)}.{rng.randint(1, 9)}.{rng.randint(1, 9)}",
    }


def write_tickets(path: str | os.PathLike[str], tickets: list[dict[str, str]]) -> None:
    write_jsonl(path, tickets)


@DATASET_KINDS.register("rca-synthetic")
def rca_synthetic_dataset(cfg: dict, inputs: dict[str, Path]) -> Splits:
    """``inputs["tickets"]``, a file from write_tickets, split by category like the "tickets" kind."""
    if "tickets" not in inputs:
        raise DatasetError("dataset kind 'rca-synthetic' needs the generated ticket file as input 'tickets'")
    path = Path(inputs["tickets"])
    return split_tickets(read_tickets(path, {"id": "ticket_id", "category": "category"}), cfg)
