//! Fair shares of the uplink: one HTB class per subscriber, so that one subscriber's flood
//! cannot starve the others (`tc`, argv only).
//!
//! With `bandwidth_down`/`bandwidth_up` set (kbit/s: what the gateway shares), every interface
//! a subscriber's traffic leaves by gets a root HTB qdisc (handle [`HANDLE`]): class `:1` for
//! everything that is not a subscriber's (unlimited), class `:2` for all subscribers together
//! (rate and ceiling = the shared bandwidth), and under it one class per session (minor
//! [`minor`] of its slot) with an equal guaranteed rate and the whole bandwidth as ceiling:
//! an idle subscriber's share goes to the busy ones, and a subscriber that wants its share gets
//! at least it while another floods. Downloads are shaped where they leave towards the
//! subscriber (its tunnel interface; the mesh interface for the route method), uploads on the
//! WAN. Packets are put into a class by the firewall ([`super::firewall`]: `meta priority`, or
//! iptables `CLASSIFY`), by address, so the shaping needs no filter of its own.
//!
//! HTB is used because it is everywhere (this kernel has no fq_codel, sfq or cake); shaping to
//! slightly below the real uplink (about 95 %) keeps the queue on the gateway, where it is fair,
//! instead of the modem's. Spare bandwidth is lent in turns of [`QUANTUM`] bytes, a whole GSO
//! aggregate, so that turns are equal in bytes whatever size of packets each subscriber's flows
//! make. Leaves keep the default FIFO of the interface's queue length: a shorter one made the
//! share worse (README, Performance).

use super::cmd::{self, CmdError};
use std::collections::BTreeSet;

/// Major number of our qdisc (hex), `7e:`.
pub const HANDLE: &str = "7e";

/// The class minor (hex) of a session in slot `slot`.
pub fn minor(slot: u32) -> u32 {
    0x100 + slot
}

/// The class id (`7e:1xx`) of class minor `minor`.
pub fn class_id(minor: u32) -> String {
    format!("{HANDLE}:{minor:x}")
}

/// HTB's round-robin quantum (bytes) for the subscriber classes: at least the largest packet a
/// class can see, a GSO/GRO aggregate of up to 64 KiB (veth, tun with offloads and wireguard all
/// pass them), plus one Ethernet frame. HTB lends spare bandwidth in turns of `quantum` bytes but
/// always sends one packet per turn, so with a smaller quantum (it was 1514) the split is per
/// packet, not per byte: a subscriber whose flows make bigger aggregates (many TCP streams) gets
/// more. In `bench/fairshare.sh`, B kept 27–48 % of the uplink against 8 streams with 1514,
/// 44–46 % with this.
pub const QUANTUM: u32 = 65_536 + 1_514;

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The `tc` calls that put our root qdisc on `ifname` with `total_kbit` for subscribers.
pub fn root_argvs(ifname: &str, total_kbit: u32) -> Vec<Vec<String>> {
    let total = format!("{total_kbit}kbit");
    let root = format!("{HANDLE}:");
    let other = format!("{HANDLE}:1");
    let subs = format!("{HANDLE}:2");
    vec![
        argv(&[
            "tc", "qdisc", "replace", "dev", ifname, "root", "handle", &root, "htb", "default", "1",
        ]),
        argv(&[
            "tc", "class", "replace", "dev", ifname, "parent", &root, "classid", &other, "htb",
            "rate", "10gbit", "quantum", "1514",
        ]),
        argv(&[
            "tc", "class", "replace", "dev", ifname, "parent", &root, "classid", &subs, "htb",
            "rate", &total, "ceil", &total, "quantum", "1514",
        ]),
    ]
}

/// The `tc` call that gives a session its class (minor `minor`) on `ifname`: an equal share of
/// `total_kbit` among `capacity` subscribers guaranteed, all of it as ceiling.
pub fn class_argv(ifname: &str, minor: u32, total_kbit: u32, capacity: u32) -> Vec<String> {
    let share = (total_kbit / capacity.max(1)).max(8);
    argv(&[
        "tc",
        "class",
        "replace",
        "dev",
        ifname,
        "parent",
        &format!("{HANDLE}:2"),
        "classid",
        &class_id(minor),
        "htb",
        "rate",
        &format!("{share}kbit"),
        "ceil",
        &format!("{total_kbit}kbit"),
        "quantum",
        &QUANTUM.to_string(),
    ])
}

/// What `tc` says when the class or qdisc to remove is already gone.
const ABSENT: [&str; 4] = ["Cannot find", "No such", "not found", "Invalid handle"];

fn absent(e: &CmdError) -> bool {
    ABSENT.iter().any(|m| e.stderr().contains(m))
}

/// Per-subscriber shaping, applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaper {
    /// Kbit/s shared towards subscribers (0: downloads are not shaped).
    pub down_kbit: u32,
    /// Kbit/s shared from subscribers out of the WAN (0: uploads are not shaped).
    pub up_kbit: u32,
    /// Number of subscriber slots (the guaranteed share is the total over this).
    pub capacity: u32,
    /// The WAN interface.
    pub wan: String,
    /// Interfaces that carry our root qdisc.
    rooted: BTreeSet<String>,
}

impl Shaper {
    /// A shaper that has not touched the system yet.
    pub fn new(down_kbit: u32, up_kbit: u32, capacity: u32, wan: &str) -> Shaper {
        Shaper {
            down_kbit,
            up_kbit,
            capacity,
            wan: wan.to_string(),
            rooted: BTreeSet::new(),
        }
    }

    /// Whether anything is shaped.
    pub fn active(&self) -> bool {
        self.down_kbit > 0 || self.up_kbit > 0
    }

    /// Gives a session (class minor `minor`), whose downloads leave by `ifname`, its classes.
    pub fn admit(&mut self, ifname: &str, minor: u32) -> Result<(), CmdError> {
        self.admit_many(&[(ifname.to_string(), minor)])
    }

    /// Gives sessions (download interface, class minor) their classes, with one `tc -batch`
    /// (root qdiscs first where missing). On an error the caller takes back what it gave
    /// ([`Shaper::dismiss_many`]); a root qdisc stays (it serves the sessions to come).
    pub fn admit_many(&mut self, sessions: &[(String, u32)]) -> Result<(), CmdError> {
        if !self.active() || sessions.is_empty() {
            return Ok(());
        }
        let mut roots: Vec<String> = Vec::new();
        let mut lines = Vec::new();
        let wan = self.wan.clone();
        for (ifname, _) in sessions {
            for (dev, total) in [(ifname, self.down_kbit), (&wan, self.up_kbit)] {
                if total > 0 && !self.rooted.contains(dev) && !roots.contains(dev) {
                    roots.push(dev.clone());
                    lines.extend(root_argvs(dev, total));
                }
            }
        }
        for (ifname, minor) in sessions {
            if self.down_kbit > 0 {
                lines.push(class_argv(ifname, *minor, self.down_kbit, self.capacity));
            }
            if self.up_kbit > 0 {
                lines.push(class_argv(&wan, *minor, self.up_kbit, self.capacity));
            }
        }
        run_batch(&lines, false)?;
        self.rooted.extend(roots);
        Ok(())
    }

    /// Removes a session's classes.
    pub fn dismiss(&mut self, ifname: &str, minor: u32) -> Result<(), CmdError> {
        self.dismiss_many(&[(ifname.to_string(), minor)])
    }

    /// Removes sessions' classes (download interface, class minor), with one `tc -batch`;
    /// classes already gone are no error.
    pub fn dismiss_many(&mut self, sessions: &[(String, u32)]) -> Result<(), CmdError> {
        let mut lines = Vec::new();
        for (ifname, minor) in sessions {
            let id = class_id(*minor);
            for dev in [ifname.as_str(), self.wan.as_str()] {
                if self.rooted.contains(dev) {
                    lines.push(argv(&["tc", "class", "del", "dev", dev, "classid", &id]));
                }
            }
        }
        lines.sort();
        lines.dedup();
        run_batch(&lines, true)
    }

    /// Removes our root qdiscs (only ours: a root qdisc of another handle stays).
    pub fn teardown(&mut self) -> Result<(), CmdError> {
        for dev in std::mem::take(&mut self.rooted) {
            let shown = cmd::run(&["tc", "qdisc", "show", "dev", &dev, "root"]).unwrap_or_default();
            if shown.contains(&format!("htb {HANDLE}:")) {
                match cmd::run(&["tc", "qdisc", "del", "dev", &dev, "root"]) {
                    Err(e) if !absent(&e) => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The `tc -batch -` input for `argvs` (each a `tc …` argv): one line per call, without `tc`.
pub fn batch_input(argvs: &[Vec<String>]) -> String {
    argvs.iter().map(|a| a[1..].join(" ") + "\n").collect()
}

/// Runs `argvs` as one `tc -batch`; with `removal`, every line is tried (`-force`) and lines that
/// failed only because their class is already gone are no error.
fn run_batch(argvs: &[Vec<String>], removal: bool) -> Result<(), CmdError> {
    if argvs.is_empty() {
        return Ok(());
    }
    let tool: &[&str] = if removal {
        &["tc", "-force", "-batch", "-"]
    } else {
        &["tc", "-batch", "-"]
    };
    match cmd::run_input(tool, &batch_input(argvs)) {
        Err(e) if removal && only_absent(e.stderr()) => Ok(()),
        r => r.map(drop),
    }
}

/// Whether every complaint in a `tc -force -batch` stderr says that a class is already gone.
fn only_absent(stderr: &str) -> bool {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Command failed"))
        .all(|l| ABSENT.iter().any(|m| l.contains(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_tc_call_per_line_without_tc() {
        let lines = vec![
            root_argvs("wg0", 1000).remove(0),
            class_argv("wg0", minor(3), 1000, 10),
        ];
        assert_eq!(
            batch_input(&lines),
            "qdisc replace dev wg0 root handle 7e: htb default 1\n\
             class replace dev wg0 parent 7e:2 classid 7e:103 htb rate 100kbit ceil 1000kbit quantum 67050\n"
        );
        assert!(only_absent(
            "RTNETLINK answers: No such file or directory\nCommand failed -:2\n"
        ));
        assert!(!only_absent(
            "RTNETLINK answers: No such file or directory\nCommand failed -:1\nRTNETLINK answers: Operation not permitted\nCommand failed -:2\n"
        ));
    }

    #[test]
    fn classes_share_equally_and_may_borrow_everything() {
        assert_eq!(class_id(minor(0)), "7e:100");
        assert_eq!(class_id(minor(17)), "7e:111");
        assert_eq!(
            class_argv("wg0", minor(1), 20000, 10).join(" "),
            "tc class replace dev wg0 parent 7e:2 classid 7e:101 htb rate 2000kbit ceil 20000kbit quantum 67050"
        );
        // A tiny bandwidth among many slots still gets a usable rate.
        assert!(class_argv("wg0", 1, 100, 65535).contains(&"8kbit".to_string()));
        let root = root_argvs("wan0", 5000);
        assert_eq!(
            root[0].join(" "),
            "tc qdisc replace dev wan0 root handle 7e: htb default 1"
        );
        assert!(
            root[2]
                .join(" ")
                .contains("classid 7e:2 htb rate 5000kbit ceil 5000kbit")
        );
    }

    #[test]
    fn the_quantum_holds_a_whole_gso_aggregate() {
        // HTB sends one packet per turn even when it is bigger than the quantum: only a
        // quantum of at least the biggest packet (a 64 KiB GSO/GRO aggregate and its Ethernet
        // header) makes the turns equal in bytes between a subscriber with many flows and one
        // with a single flow.
        let gso_aggregate = 65_536 + 14;
        for (total, capacity) in [(19000, 10), (500, 250), (1_000_000, 2)] {
            let argv = class_argv("wg0", minor(0), total, capacity);
            let at = argv.iter().position(|w| w == "quantum").unwrap();
            let quantum: u32 = argv[at + 1].parse().unwrap();
            assert!(quantum >= gso_aggregate, "{argv:?}");
            // Above 200000 bytes the kernel warns that the quantum is big (turns get coarse).
            assert!(quantum <= 200_000, "{argv:?}");
        }
    }
}
