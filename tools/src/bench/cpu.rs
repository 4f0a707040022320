//! CPU time of the processes a benchmark run is made of, read from `/proc`,
//! so that where the time goes is a table rather than a guess.
//!
//! A process's CPU time is its user plus system time (`/proc/<pid>/stat`
//! fields 14 and 15, `utime` and `stime`), summed over all its threads by
//! the kernel, in clock ticks. PostgreSQL is many processes: the postmaster
//! and a child per connection plus its background workers (checkpointer,
//! WAL writer, autovacuum, WAL senders, …). The live children are found by
//! their parent pid; a child that ended is no longer in `/proc`, but once
//! the postmaster has reaped it the kernel adds its time to the postmaster's
//! `cutime` and `cstime` (fields 16 and 17). So PostgreSQL's time at an
//! instant is the postmaster's own and reaped children's time plus the live
//! children's own, and the difference between two instants counts every
//! backend that ran in between, whether it is still there or not.
//!
//! What no process is charged for is not in the table: softirq work the
//! kernel does for loopback traffic lands on whichever process happens to
//! be running, and other work on the machine is not counted at all.

use std::ops::Sub;

use anyhow::Context as _;
use serde::Serialize;

/// One value for each process the benchmark watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Processes<T> {
    pub order_service: T,
    pub rewards_service: T,
    /// The postmaster and every child it had during the interval.
    pub postgres: T,
    pub nats_server: T,
    /// The benchmark process itself: the HTTP clients, and the reads of the
    /// rewards database that wait for the credits.
    pub load_generator: T,
}

impl<T> Processes<T> {
    /// Applies `f` to each process's value.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Processes<U> {
        Processes {
            order_service: f(self.order_service),
            rewards_service: f(self.rewards_service),
            postgres: f(self.postgres),
            nats_server: f(self.nats_server),
            load_generator: f(self.load_generator),
        }
    }
}

impl Processes<f64> {
    /// The sum over every process.
    pub fn total(&self) -> f64 {
        self.order_service
            + self.rewards_service
            + self.postgres
            + self.nats_server
            + self.load_generator
    }
}

impl Sub for Processes<u64> {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Processes {
            order_service: self.order_service.saturating_sub(earlier.order_service),
            rewards_service: self.rewards_service.saturating_sub(earlier.rewards_service),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            nats_server: self.nats_server.saturating_sub(earlier.nats_server),
            load_generator: self.load_generator.saturating_sub(earlier.load_generator),
        }
    }
}

/// The processes of one run, by pid; the load generator is this process.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    pub order_service: u32,
    pub rewards_service: u32,
    /// The private PostgreSQL's postmaster.
    pub postmaster: u32,
    pub nats_server: u32,
}

impl Watched {
    /// The CPU time each process has used so far, in clock ticks.
    pub fn ticks(&self) -> anyhow::Result<Processes<u64>> {
        Ok(Processes {
            order_service: own_ticks(&read_stat(self.order_service)?),
            rewards_service: own_ticks(&read_stat(self.rewards_service)?),
            postgres: postgres_ticks(self.postmaster)?,
            nats_server: own_ticks(&read_stat(self.nats_server)?),
            load_generator: own_ticks(&read_stat_file("/proc/self/stat")?),
        })
    }
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times: what
/// `sysconf(_SC_CLK_TCK)` returns (and `getconf CLK_TCK` prints). The C
/// library takes it from the `AT_CLKTCK` entry the kernel puts in every
/// process's auxiliary vector, which `/proc/self/auxv` shows; read there, it
/// needs no `unsafe` call. 100 when it cannot be read, as the C library
/// assumes too (and as every common Linux architecture has it).
pub fn ticks_per_second() -> f64 {
    const AT_CLKTCK: usize = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |bytes: &[u8]| usize::from_ne_bytes(bytes.try_into().expect("a word's bytes"));
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| {
            // (type, value) pairs of native words, ended by a zero type.
            auxv.chunks_exact(2 * WORD)
                .map(|pair| (word(&pair[..WORD]), word(&pair[WORD..])))
                .take_while(|&(kind, _)| kind != 0)
                .find_map(|(kind, value)| (kind == AT_CLKTCK && value > 0).then_some(value))
        })
        .map_or(100.0, |ticks| ticks as f64)
}

/// The fields of a `/proc/<pid>/stat` line after the command name, so that
/// `fields[n - 3]` is the manual's field `n` (`proc(5)`): the name is in
/// parentheses and may itself hold spaces or parentheses, so it is skipped
/// up to its last `)`.
struct Stat(Vec<u64>);

impl Stat {
    fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.rsplit_once(')')?;
        // Field 3, the state, is a letter; counting it as 0 keeps the indices.
        Some(Self(
            rest.split_whitespace()
                .map(|field| field.parse().unwrap_or(0))
                .collect(),
        ))
    }

    /// Field `n` of `proc(5)` (1-based).
    fn field(&self, n: usize) -> u64 {
        self.0.get(n - 3).copied().unwrap_or(0)
    }

    fn ppid(&self) -> u64 {
        self.field(4)
    }
}

/// `utime + stime`: the process's own CPU time, all its threads included.
fn own_ticks(stat: &Stat) -> u64 {
    stat.field(14) + stat.field(15)
}

/// `cutime + cstime`: the time of the children it has waited for.
fn reaped_children_ticks(stat: &Stat) -> u64 {
    stat.field(16) + stat.field(17)
}

fn read_stat(pid: u32) -> anyhow::Result<Stat> {
    read_stat_file(&format!("/proc/{pid}/stat"))
}

fn read_stat_file(path: &str) -> anyhow::Result<Stat> {
    let line = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Stat::parse(&line).with_context(|| format!("parsing {path}: {line:?}"))
}

/// PostgreSQL's CPU time so far: the postmaster's own and its reaped
/// children's, plus every live child's own (see the module's comment).
fn postgres_ticks(postmaster: u32) -> anyhow::Result<u64> {
    let stat = read_stat(postmaster).context("reading the postmaster's times")?;
    let mut ticks = own_ticks(&stat) + reaped_children_ticks(&stat);
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: then its
        // time is the postmaster's `cutime` (or lost, if not yet reaped,
        // for the few milliseconds until it is).
        if let Ok(child) = read_stat(pid)
            && child.ppid() == u64::from(postmaster)
        {
            ticks += own_ticks(&child);
        }
    }
    Ok(ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_after_a_command_name_with_spaces_and_parentheses() {
        // A postgres backend renames itself; the name may hold anything.
        let line = "4242 (postgres: x (y) ) S 4000 4000 4000 0 -1 4194560 \
                    100 0 0 0 7 3 11 13 20 0 1 0 555 1000 10 18446744073709551615";
        let stat = Stat::parse(line).expect("a stat line");
        assert_eq!(stat.ppid(), 4000);
        assert_eq!(own_ticks(&stat), 7 + 3);
        assert_eq!(reaped_children_ticks(&stat), 11 + 13);
    }

    #[test]
    fn ticks_per_second_is_what_getconf_says() {
        let Ok(output) = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
        else {
            return; // No getconf to compare with.
        };
        let expected: f64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("getconf prints a number");
        assert_eq!(ticks_per_second(), expected);
        read_stat_file("/proc/self/stat").expect("our own stat line parses");
    }

    #[test]
    fn later_minus_earlier_per_process() {
        let earlier = Processes {
            order_service: 10,
            rewards_service: 5,
            postgres: 100,
            nats_server: 7,
            load_generator: 3,
        };
        let later = Processes {
            order_service: 30,
            rewards_service: 9,
            postgres: 160,
            nats_server: 8,
            load_generator: 13,
        };
        let seconds = (later - earlier).map(|ticks| ticks as f64 / 100.0);
        assert_eq!(seconds.postgres, 0.6);
        assert!((seconds.total() - 0.95).abs() < 1e-9);
    }
}
