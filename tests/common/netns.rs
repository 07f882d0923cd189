//! Hosts of their own on one machine: a Linux network namespace per host,
//! joined by veth pairs to a bridge in the root namespace (where the test
//! runs), and a real DNS server (dnsmasq) on one of them. Needs root, `ip`
//! (iproute2) and `dnsmasq`.

use super::processes::Process;
use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

/// Every name this module makes starts with this, so that what a killed run
/// left behind can be found and removed.
const PREFIX: &str = "hsnet";
const SUBNET: [u8; 3] = [10, 213, 0];

/// An address on the test network.
pub fn ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], host)
}

fn run(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|error| panic!("cannot run {args:?}: {error}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_quietly(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// The bridge and the hosts on it; all removed when dropped.
pub struct Network {
    bridge: String,
    /// Namespaces, and the root-side ends of their veth pairs.
    hosts: Vec<(String, String)>,
}

impl Network {
    /// A bridge at `10.213.0.1/24` in the root namespace.
    pub fn new() -> Network {
        remove_leftovers();
        let bridge = format!("{PREFIX}br");
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        let network = Network {
            bridge,
            hosts: Vec::new(),
        };
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", ip(1)),
            "dev",
            &network.bridge,
        ]);
        run(&["ip", "link", "set", &network.bridge, "up"]);
        network
    }

    /// A host `name` at `10.213.0.<host>`, whose resolver asks `dns` (and
    /// whose /etc/hosts is empty), as `ip netns exec` sets it up from
    /// `/etc/netns/<namespace>/`.
    pub fn host(&mut self, name: &str, host: u8, dns: Ipv4Addr) -> Host {
        let index = self.hosts.len();
        let namespace = format!("{PREFIX}-{name}");
        let (outside, inside) = (format!("{PREFIX}v{index}"), format!("{PREFIX}p{index}"));
        run(&["ip", "netns", "add", &namespace]);
        self.hosts.push((namespace.clone(), outside.clone()));
        run(&[
            "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        run(&["ip", "link", "set", &inside, "netns", &namespace]);
        run(&["ip", "link", "set", &outside, "master", &self.bridge]);
        run(&["ip", "link", "set", &outside, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &namespace];
            all.extend_from_slice(args);
            run(&all);
        };
        exec(&["ip", "link", "set", "lo", "up"]);
        exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", ip(host)),
            "dev",
            &inside,
        ]);
        exec(&["ip", "link", "set", &inside, "up"]);
        let etc = Path::new("/etc/netns").join(&namespace);
        fs::create_dir_all(&etc).unwrap();
        fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {dns}\noptions timeout:1 attempts:2\n"),
        )
        .unwrap();
        fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        Host {
            namespace,
            addr: ip(host),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for (namespace, outside) in &self.hosts {
            // A namespace outlives `ip netns del` while sockets in it linger
            // (TIME_WAIT); deleting the veth now frees the names at once.
            run_quietly(&["ip", "link", "del", outside]);
            run_quietly(&["ip", "netns", "del", namespace]);
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(namespace));
        }
        run_quietly(&["ip", "link", "del", &self.bridge]);
    }
}

/// Namespaces, links and /etc/netns folders of a run that was killed.
fn remove_leftovers() {
    if let Ok(output) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let namespace = line.split_whitespace().next().unwrap_or_default();
            if namespace.starts_with(PREFIX) {
                run_quietly(&["ip", "netns", "del", namespace]);
                let _ = fs::remove_dir_all(Path::new("/etc/netns").join(namespace));
            }
        }
    }
    if let Ok(output) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // "23: hsnetv0@if22: <…> …"
            let name = line.split(": ").nth(1).unwrap_or_default();
            let name = name.split('@').next().unwrap_or_default();
            if name.starts_with(PREFIX) {
                run_quietly(&["ip", "link", "del", name]);
            }
        }
    }
}

/// A host: a namespace with one address.
pub struct Host {
    namespace: String,
    pub addr: Ipv4Addr,
}

impl Host {
    /// Starts `program` on this host, its stderr into `log`.
    pub fn start<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: &Path,
        args: &[S],
        log: &Path,
    ) -> Process {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(program)
            .args(args)
            .stderr(fs::File::create(log).unwrap());
        Process::spawn(&mut command, program)
    }
}

/// dnsmasq answering for the names in one hosts file, re-read on demand.
pub struct Dns {
    hosts_file: PathBuf,
    /// dnsmasq ignores SIGINT: stopped with SIGTERM when dropped.
    process: Option<Process>,
}

impl Dns {
    /// Serves DNS on `host`, port 53, for `records` (name, address) and
    /// nothing else.
    pub fn start(host: &Host, folder: &Path, records: &[(&str, Ipv4Addr)]) -> Dns {
        let hosts_file = folder.join("dns-hosts");
        write_records(&hosts_file, records);
        let process = host.start(
            Path::new("dnsmasq"),
            &[
                "--keep-in-foreground".to_string(),
                "--log-facility=-".to_string(),
                "--no-resolv".to_string(),
                "--no-hosts".to_string(),
                "--no-negcache".to_string(),
                "--local-ttl=0".to_string(),
                "--user=root".to_string(),
                format!("--pid-file={}", folder.join("dnsmasq.pid").display()),
                format!("--addn-hosts={}", hosts_file.display()),
                format!("--listen-address={}", host.addr),
                "--bind-interfaces".to_string(),
            ],
            &folder.join("dnsmasq.log"),
        );
        Dns {
            hosts_file,
            process: Some(process),
        }
    }

    /// Replaces the records and has dnsmasq read them again (SIGHUP).
    pub fn set(&self, records: &[(&str, Ipv4Addr)]) {
        write_records(&self.hosts_file, records);
        let process = self.process.as_ref().expect("dnsmasq runs");
        run(&["kill", "-HUP", &process.id().to_string()]);
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.signal("TERM");
        }
    }
}

fn write_records(path: &Path, records: &[(&str, Ipv4Addr)]) {
    let text: String = records
        .iter()
        .map(|(name, addr)| format!("{addr} {name}\n"))
        .collect();
    fs::write(path, text).unwrap();
}
