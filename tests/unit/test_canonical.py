"""Values dockerd hands to runc or the kernel unchanged: judged as the kernel reads them, or
refused when not canonical (issue 6, class 1)."""

import os

import pytest

from authz.decoding import canonical
from authz.decoding.errors import RequestRefused
from authz.decoding.checks import local_volume_facts
from tests.unit.test_decoding import call, create, decode, facts_of


@pytest.mark.parametrize("raw, problem", [
    ("/srv/data", None),
    ("/", None),
    ("srv/data", "not absolute"),
    ("/srv/data/", "ends in '/'"),
    ("/srv//data", "empty"),
    ("/srv/./data", "'.'"),
    ("/srv/x/../../etc", "'..'"),
    ("/srv/..", "'..'"),
    ("/srv/a\\,b", "backslash"),
    ("/srv/a b", "whitespace"),
    (" /srv", "not absolute"),
    ("/srv/a\tb", "whitespace"),
    ("/srv/a\x00b", "control"),
    ("/srv/a\nb", "whitespace"),
    ("/" + "a" * 5000, "PATH_MAX"),
])
def test_path_problems(raw, problem):
    found = canonical.path_problem(raw)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_symlink_is_resolved_before_a_later_dotdot(tmp_path):
    """The kernel follows lnk before '..': "lnk/.." is the parent of lnk's target, so such a
    path is refused rather than cleaned to the directory that holds lnk."""
    (tmp_path / "a").mkdir()
    os.symlink("/etc/ssl", tmp_path / "lnk")
    with pytest.raises(RequestRefused) as info:
        canonical.kernel_path_facts("host-path", f"{tmp_path}/lnk/../x", "device", "test")
    assert info.value.rule == "request-noncanonical"
    facts = canonical.kernel_path_facts("host-path", f"{tmp_path}/lnk", "device", "test")
    assert [f.value for f in facts] == [f"{tmp_path}/lnk", "/etc/ssl"]


@pytest.mark.parametrize("options", [
    {"type": "none", "o": "bind", "device": "/srv/x/../../etc"},
    {"type": "none", "o": "bind", "device": "/srv/x/"},
    {"type": "none", "o": "bind", "device": "//etc"},
    {"type": "none", "o": "bind", "device": "/srv/x\\..\\..\\etc"},
    {"type": "overlay", "o": "lowerdir=/srv/a/../../etc,upperdir=/srv/u,workdir=/srv/w"},
    {"type": "overlay", "o": "lowerdir=/srv/a\\:/etc,upperdir=/srv/u,workdir=/srv/w"},
    {"type": "overlay", "o": "lowerdir=/srv/a::/etc,upperdir=/srv/u,workdir=/srv/w"},
    {"type": "overlay", "o": "lowerdir+=/srv/a/..,upperdir=/srv/u,workdir=/srv/w"},
    {"type": "overlay", "o": "datadir+=./etc,upperdir=/srv/u,workdir=/srv/w"},
    {"type": "overlay", "o": "upperdir=/srv/u/ ,workdir=/srv/w,lowerdir=/srv/a"},
    {"type": " proc", "device": "proc"},
    {"type": "tmpfs\n", "device": "tmpfs"},
])
def test_noncanonical_local_volume_values_are_refused(options):
    with pytest.raises(RequestRefused) as info:
        local_volume_facts("local", options, "DriverOpts")
    assert info.value.rule == "request-noncanonical"


@pytest.mark.parametrize("options", [
    {"type": "tmpfs", "device": "tmpfs", "o": "size=10m,foo=/etc"},
    {"type": "tmpfs", "device": "tmpfs", "o": " size=10m"},           # moby does not trim
    {"type": "tmpfs", "device": "tmpfs", "o": "defaults"},            # data, not a flag
    {"type": "tmpfs", "device": "tmpfs", "o": "remount"},
    {"type": "nfs", "device": ":/x", "o": "addr=127.0.0.1,fsc=/etc"},
    {"type": "overlay", "o": "lowerdir=/srv/a,upperdir=/srv/u,workdir=/srv/w,redirectdir=on"},
    {"type": "none", "o": "bind,lowerdir=/etc", "device": "/srv/x"},  # data with a bind
    {"type": "cgroup", "device": "cgroup", "o": "none,name=x"},
    {"type": "ext4", "device": "/dev/vda", "o": "journal_path=/dev/vdb"},
    {"type": "none", "o": "bind"},                                     # no device
    {"type": "tmpfs", "device": "tmpfs", "Device": "/etc"},           # keys are exact
    {"type": "tmpfs", "device": "tmpfs", "mountpoint": "/etc"},
])
def test_unknown_local_volume_options_are_refused(options):
    with pytest.raises(RequestRefused) as info:
        local_volume_facts("local", options, "DriverOpts")
    assert info.value.rule == "request-volume-option"


@pytest.mark.parametrize("options", [
    {},
    {"type": "tmpfs", "device": "tmpfs", "o": "size=10m,uid=1000,mode=0700"},
    {"type": "nfs", "device": ":/export", "o": "addr=127.0.0.1,rw,nfsvers=4,soft"},
    {"type": "none", "o": "bind,ro,nosuid,nodev", "device": "/srv/data"},
])
def test_known_local_volume_options_are_read(options):
    facts = local_volume_facts("local", options, "DriverOpts")
    assert all(f.kind in ("host-path", "volume-type") for f in facts)


def test_volume_create_and_inline_mounts_and_services_share_the_rules():
    bad = {"type": "none", "o": "bind", "device": "/srv/x/../../etc"}
    bodies = [
        ("POST", "/volumes/create", {"Name": "v", "DriverOpts": bad}),
        ("POST", "/containers/create", {"Image": "i", "HostConfig": {"Mounts": [
            {"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig": {
                "Name": "local", "Options": bad}}}]}}),
        ("POST", "/services/create", {"TaskTemplate": {"ContainerSpec": {"Image": "i", "Mounts": [
            {"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig": {
                "Name": "local", "Options": bad}}}]}}}),
    ]
    for method, uri, body in bodies:
        with pytest.raises(RequestRefused) as info:
            decode(call(method, uri, body))
        assert info.value.rule == "request-noncanonical", uri


@pytest.mark.parametrize("field, paths", [
    ("MaskedPaths", ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                     "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                     "/proc/sched_debug", "/proc/nonexistent/../scsi", "/sys/firmware"]),
    ("MaskedPaths", ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                     "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                     "/proc/sched_debug", "/proc/scsi/", "/sys/firmware"]),
    ("ReadonlyPaths", ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/x/../sys",
                       "/proc/sysrq-trigger"]),
    ("ReadonlyPaths", ["/proc/bus", "/proc/fs", "/proc/irq", "//proc/sys", "/proc/sysrq-trigger"]),
])
def test_masked_paths_count_only_when_exact(field, paths):
    """runc skips an entry that does not resolve: one that merely cleans to a default
    protects nothing."""
    assert ("masked-paths", "reduced") in create({field: paths})


def test_exact_default_masked_paths_are_kept():
    assert ("masked-paths", "reduced") not in create({"ReadonlyPaths": [
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]})


@pytest.mark.parametrize("opt", ["apparmor= unconfined", "apparmor=unconfined ",
                                 "apparmor=\tunconfined", "apparmor:unconfined\n",
                                 "label= disable", "label=type:spc_t "])
def test_names_the_kernel_trims_are_refused(opt):
    with pytest.raises(RequestRefused) as info:
        decode(call("POST", "/containers/create", {"Image": "i", "HostConfig": {"SecurityOpt": [opt]}}))
    assert info.value.rule == "request-noncanonical"


def test_checkpoint_dir_is_judged_raw():
    assert ("host-path", "/srv/cp") in facts_of(
        "POST", "/containers/" + "c" * 64 + "/start?checkpoint=a&checkpoint-dir=/srv/cp")
    for query in ("checkpoint=a&checkpoint-dir=/srv/x/../../etc", "checkpoint=../../etc&checkpoint-dir=/srv"):
        with pytest.raises(RequestRefused):
            decode(call("POST", "/containers/" + "c" * 64 + "/start?" + query))


@pytest.mark.parametrize("options", [
    {"type": "overlay", "o": "lowerdir=" + ":".join(["/a"] * 600) + ",upperdir=/srv/u,workdir=/srv/w"},
    {"type": "tmpfs", "device": "tmpfs", "o": ",".join(["ro"] * 1000)},
])
def test_option_counts_are_bounded_before_any_path_is_resolved(options):
    with pytest.raises(RequestRefused) as info:
        local_volume_facts("local", options, "DriverOpts")
    assert info.value.rule == "request-volume-option"


def test_mount_options_longer_than_a_page_are_refused():
    """mount(2) copies one page of options and silently drops the rest."""
    with pytest.raises(RequestRefused) as info:
        local_volume_facts("local", {"type": "tmpfs", "device": "tmpfs",
                                     "o": "mode=0700,size=" + "1" * 5000}, "DriverOpts")
    assert info.value.rule == "request-noncanonical"


def test_symlink_chains_cost_one_system_call_per_component(tmp_path):
    """Each symlink points back to a deep directory: a resolver that walks the targets in
    Python pays for every target; the kernel resolves each component in one call."""
    import time

    deep = tmp_path
    for _ in range(300):
        deep = deep / "d"
    deep.mkdir(parents=True)
    for i in range(400):
        os.symlink(str(deep), deep / f"s{i}")
    path = str(deep) + "/" + "/".join(f"s{i}" for i in range(400))
    started = time.process_time()
    assert canonical.resolved(path) == str(deep)
    assert time.process_time() - started < 0.5


@pytest.mark.parametrize("make, problem", [
    (lambda d: os.symlink("/nonexistent-pyauthz", d / "l"), "points nowhere"),
    (lambda d: os.symlink(str(d / "l"), d / "l"), "cannot be resolved"),
])
def test_unresolvable_symlinks_are_refused(tmp_path, make, problem):
    make(tmp_path)
    with pytest.raises(RequestRefused) as info:
        canonical.resolved(f"{tmp_path}/l/x")
    assert problem in info.value.found


def test_log_addresses_that_name_host_sockets():
    facts = create({"LogConfig": {"Type": "syslog", "Config": {
        "syslog-address": "unix:///var/run/docker.sock", "tag": "x"}}})
    assert ("log-socket", "/var/run/docker.sock") in facts
    assert not any(k == "log-socket" for k, _ in create({"LogConfig": {"Type": "syslog", "Config": {
        "syslog-address": "udp://127.0.0.1:514"}}}))


def test_tmpfs_options_are_read_as_runc_reads_them():
    assert ("mount-propagation", "rshared") in create({"Tmpfs": {"/t": "rw,rshared"}})
    with pytest.raises(RequestRefused):
        create({"Tmpfs": {"/t": "bind,rw"}})


def test_volume_drivers_are_reported_wherever_they_are_named():
    assert ("volume-driver", "vendor/vol") in create({"VolumeDriver": "vendor/vol"})
    assert ("volume-driver", "vendor/vol") in facts_of(
        "POST", "/volumes/create", {"Name": "v", "Driver": "vendor/vol"})
    mount = {"Type": "volume", "Source": "v", "Target": "/v",
             "VolumeOptions": {"DriverConfig": {"Name": "vendor/vol"}}}
    assert ("volume-driver", "vendor/vol") in create({"Mounts": [mount]})
    assert not any(k == "volume-driver" for k, _ in create({"VolumeDriver": "local"}))


def test_unknown_cifs_option_words_are_not_echoed():
    """A ',' in a cifs password splits it into words pyauthz does not know: refused, and the
    word (a piece of the password) is in neither the message nor the log."""
    with pytest.raises(RequestRefused) as info:
        local_volume_facts("local", {"type": "cifs", "device": "//srv/share",
                                     "o": "username=u,password=abc,Secret9"}, "DriverOpts")
    assert "Secret9" not in info.value.found and "Secret9" not in str(info.value)


@pytest.mark.parametrize("target", ["/proc/self/cwd/srv", "/proc/self/root", "/proc/1/root",
                                    "/proc/self/fd/3"])
def test_magic_links_are_refused(tmp_path, target):
    """/proc/self/cwd is runc's cwd (the container's rootfs) when runc mounts, and the
    plugin's when the plugin resolves: never followed."""
    os.symlink(target, tmp_path / "esc")
    with pytest.raises(RequestRefused) as info:
        canonical.resolved(f"{tmp_path}/esc")
    assert info.value.rule == "request-noncanonical"


@pytest.mark.parametrize("address, path", [
    ("unix:///run/docker.sock", "/run/docker.sock"),
    ("unix:/run/docker.sock", "/run/docker.sock"),
    ("UNIX:/run/docker.sock", "/run/docker.sock"),
    ("unixgram:/run/x.sock", "/run/x.sock"),
    ("unix://host/run/docker.sock", "/run/docker.sock"),
    ("udp://127.0.0.1:514", None),
    ("tcp://log:514", None),
])
def test_log_addresses_are_read_like_go_url_parse(address, path):
    from authz.decoding.checks import log_address_path

    assert log_address_path(address) == path


def test_service_log_drivers_restarts_and_named_volumes():
    facts = facts_of("POST", "/services/create", {"TaskTemplate": {
        "ContainerSpec": {"Image": "i", "Mounts": [{"Type": "bind", "Source": "/srv/a", "Target": "/a"}]},
        "LogDriver": {"Name": "syslog", "Options": {"syslog-address": "unix:/run/docker.sock"}}}})
    assert {("log-socket", "/run/docker.sock"), ("restart-policy", "any")} <= facts
    assert ("restart-policy", "none") not in facts_of("POST", "/services/create", {"TaskTemplate": {
        "ContainerSpec": {"Image": "i"}, "RestartPolicy": {"Condition": "none"}}})
    assert ("log-socket", "/run/docker.sock") in facts_of(
        "POST", "/swarm/update?version=5",
        {"TaskDefaults": {"LogDriver": {"Name": "syslog", "Options": {"syslog-address": "unix:///run/docker.sock"}}}})
    _, decoded = decode(call("POST", "/services/create", {"TaskTemplate": {"ContainerSpec": {
        "Image": "i", "Mounts": [{"Type": "volume", "Source": "data", "Target": "/d"}]}}}))
    assert [name for name, _ in decoded.volumes] == ["data"]


def test_top_level_volume_driver_is_copied_into_an_inner_host_config():
    """getHostConfig copies a top-level VolumeDriver into an inner HostConfig that leaves
    it empty: at create and in a legacy (< 1.24) start body."""
    body = {"Image": "i", "HostConfig": {"Binds": ["pwn:/host"]}, "VolumeDriver": "vendor/vol"}
    assert ("volume-driver", "vendor/vol") in facts_of("POST", "/containers/create", body)
    start = {"HostConfig": {"Binds": ["pwn:/host"]}, "VolumeDriver": "vendor/vol"}
    assert ("volume-driver", "vendor/vol") in facts_of(
        "POST", "/v1.23/containers/" + "c" * 64 + "/start", start)


@pytest.mark.parametrize("uri, body, expected", [
    ("/networks/create", {"Name": "n", "Driver": "vendor/net"}, ("network-driver", "vendor/net")),
    ("/networks/create", {"Name": "n", "IPAM": {"Driver": "vendor/ipam"}},
     ("network-driver", "ipam:vendor/ipam")),
    ("/containers/create", {"Image": "i", "HostConfig": {"LogConfig": {"Type": "vendor/log"}}},
     ("log-driver", "vendor/log")),
    ("/services/create", {"TaskTemplate": {"ContainerSpec": {"Image": "i"},
                                           "LogDriver": {"Name": "vendor/log"}}},
     ("log-driver", "vendor/log")),
])
def test_drivers_that_are_plugins_are_reported(uri, body, expected):
    assert expected in facts_of("POST", uri, body)


@pytest.mark.parametrize("uri, body", [
    ("/networks/create", {"Name": "n", "Driver": "../../../srv/x/evil"}),
    ("/networks/create", {"Name": "n", "IPAM": {"Driver": "../../srv/x/evil"}}),
    ("/containers/create", {"Image": "i", "HostConfig": {"LogConfig": {"Type": "a/../../b"}}}),
    ("/containers/create", {"Image": "i", "HostConfig": {"VolumeDriver": "/srv/x/evil"}}),
    ("/volumes/create", {"Name": "v", "Driver": "vendor//vol"}),
])
def test_plugin_names_that_are_paths_are_refused(uri, body):
    with pytest.raises(RequestRefused) as info:
        decode(call("POST", uri, body))
    assert info.value.rule == "request-noncanonical"


def test_builtin_drivers_are_no_facts():
    assert not facts_of("POST", "/networks/create", {"Name": "n", "Driver": "bridge",
                                                     "IPAM": {"Driver": "default"}})
    assert not any(k.endswith("-driver") for k, _ in create({"LogConfig": {"Type": "json-file"}}))


@pytest.mark.parametrize("body, expected", [
    ({"Name": "n", "Options": {"com.docker.network.bridge.name": "docker0"}}, ("host-interface", "docker0")),
    ({"Name": "n", "Driver": "bridge", "Options": {"com.docker.network.bridge.name": "lo"}},
     ("host-interface", "lo")),  # an interface that exists on the host
    ({"Name": "n", "Driver": "macvlan", "Options": {"parent": "eth0"}}, ("host-interface", "eth0")),
    ({"Name": "n", "Driver": "ipvlan", "Options": {"parent": "eth0.100"}}, ("host-interface", "eth0.100")),
])
def test_networks_on_host_interfaces(body, expected):
    assert expected in facts_of("POST", "/networks/create", body)


@pytest.mark.parametrize("options", [
    {"com.docker.network.bridge.inhibit_ipv4": "true"},
    {"com.docker.network.bridge.default_bridge": "true"},
    {"Com.docker.network.bridge.name": "docker0"},
])
def test_unknown_network_options_are_refused(options):
    with pytest.raises(RequestRefused) as info:
        decode(call("POST", "/networks/create", {"Name": "n", "Options": options}))
    assert info.value.rule == "request-driver-option"


def test_known_network_options_are_fine():
    assert not facts_of("POST", "/networks/create", {"Name": "n", "Options": {
        "com.docker.network.bridge.enable_icc": "false", "com.docker.network.driver.mtu": "1400"}})
    assert not facts_of("POST", "/networks/create", {"Name": "n", "Driver": "macvlan",
                                                      "Options": {"macvlan_mode": "bridge"}})


def test_service_plugin_runtime():
    facts = facts_of("POST", "/services/create", {"TaskTemplate": {
        "Runtime": "plugin", "PluginSpec": {"Name": "p", "Remote": "x/p:1", "Privileges": [
            {"Name": "mount", "Value": ["/"]}]}}})
    assert {("service-runtime", "plugin"), ("plugin.privilege", "mount=/")} <= facts


@pytest.mark.parametrize("uri, body", [
    ("/secrets/create", {"Name": "s", "Data": "", "Driver": {"Name": "../../../srv/x/p"}}),
    ("/configs/create", {"Name": "c", "Data": "", "Templating": {"Name": "../../srv/x/t"}}),
])
def test_secret_and_config_driver_names_must_be_plain(uri, body):
    with pytest.raises(RequestRefused) as info:
        decode(call("POST", uri, body))
    assert info.value.rule == "request-noncanonical"


def test_a_new_bridge_name_is_the_networks_own():
    assert not facts_of("POST", "/networks/create", {"Name": "n", "Options": {
        "com.docker.network.bridge.name": "br-pyauthz-none"}})
    with pytest.raises(RequestRefused):
        decode(call("POST", "/networks/create", {"Name": "n", "Options": {
            "com.docker.network.bridge.name": "../lo"}}))


def test_service_selinux_context_is_read_like_label_options():
    facts = facts_of("POST", "/services/create", {"TaskTemplate": {"ContainerSpec": {
        "Image": "i", "Privileges": {"SELinuxContext": {"User": "unconfined_u", "Role": "r",
                                                        "Level": "s0"}}}}})
    assert {("selinux", "user:unconfined_u"), ("selinux", "role:r"), ("selinux", "level:s0")} <= facts


def test_swarm_scope_bridge_names_are_host_interfaces():
    assert ("host-interface", "br-anything") in facts_of("POST", "/networks/create", {
        "Name": "n", "Scope": "swarm", "Options": {"com.docker.network.bridge.name": "br-anything"}})


def test_bridge_names_are_looked_up_like_netlink():
    from authz.decoding.checks.drivers import _host_link

    assert _host_link("lo")
    assert not _host_link("br-pyauthz-no")
    assert _host_link("a-very-long-alternative-name")  # only an altname can be this long
