//! What the broker holds after a load: the nats-server process's memory
//! (`/proc/<pid>/status`), the order stream's state as JetStream reports
//! it, and the store's size on disk.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

/// The server process's resident memory, MiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub rss_mib: f64,
    /// The most it has been resident since it started (`VmHWM`).
    pub hwm_mib: f64,
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub(super) fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading the status of process {pid}"))?;
    let kib = |field: &str| -> anyhow::Result<f64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .with_context(|| format!("no {field} in the status of process {pid}"))
    };
    Ok(Memory {
        rss_mib: kib("VmRSS:")? / 1024.0,
        hwm_mib: kib("VmHWM:")? / 1024.0,
    })
}

/// The order stream's state, as `STREAM.INFO` reports it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StreamState {
    pub messages: u64,
    /// Distinct subjects holding at least one message (`num_subjects`).
    pub num_subjects: u64,
    /// Bytes of the stored messages, as JetStream counts them.
    pub bytes: u64,
}

/// The state of stream `name`.
pub(super) async fn stream_state(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> anyhow::Result<StreamState> {
    let mut stream = js.get_stream(name).await?;
    let state = stream.info().await?.state.clone();
    Ok(StreamState {
        messages: state.messages,
        num_subjects: state.subjects_count,
        bytes: state.bytes,
    })
}

/// The disk space the files under `dir` take (their allocated blocks, as
/// `du` counts them), in bytes.
pub(super) fn disk_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.blocks() * 512;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_set_no_larger_than_its_peak() {
        let memory = memory(std::process::id()).unwrap();
        assert!(memory.rss_mib > 0.0);
        assert!(memory.rss_mib <= memory.hwm_mib);
    }

    #[test]
    fn the_disk_space_of_a_directory_counts_the_files_below_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("below")).unwrap();
        std::fs::write(dir.path().join("below/file"), vec![1u8; 10_000]).unwrap();
        assert!(disk_bytes(dir.path()).unwrap() >= 10_000);
        assert_eq!(
            disk_bytes(&dir.path().join("below")).unwrap(),
            disk_bytes(dir.path()).unwrap()
        );
    }
}
