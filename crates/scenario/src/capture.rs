//! A segment's capture, spilled to a file as the run goes: the simulator writes each frame as
//! it crosses the segment into a pcap stream, as `tcpdump -w` would, so a storm's hundreds of
//! thousands of frames never sit in memory beside its 10,000 machines. After the run the file
//! is read back frame by frame for the decoding and becomes the segment's `.pcap` output.
//!
//! The file is an unnamed temporary one, which the operating system deletes when the run is
//! dropped, and the output is a copy of it; or, when the run knows its output directory, a
//! `<segment>.pcap.partial` file there, which the output is renamed from (no copy: a 10,000
//! client storm captures 60 MB) and which is deleted if the run ends without writing it.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use netsim::{CaptureError, CapturedFrame};

/// The write buffer of each segment's capture: a storm has a segment per 100 clients, and
/// 1,001 buffers of 64 KiB were 64 MiB of a 100,000-client run (8 KiB is a page-cache write
/// every few dozen frames).
const BUFFER: usize = 8 * 1024;

/// A segment that has written this much is a busy one (a storm's server segment carries 60%
/// of its frames; a branch of 100 clients writes a quarter of a megabyte in all)...
const BUSY: u64 = 1024 * 1024;

/// ... and gets this write buffer: the page cache takes a large write in large folios, where
/// each 8 KiB write cost two page allocations and two rounds of the file system's per-page
/// work (most of the capture's CPU time).
const BUSY_BUFFER: usize = 256 * 1024;

/// The capture file of one segment.
#[derive(Debug)]
pub struct SpilledCapture {
    file: File,
    /// The named file's path, for a capture written into the output directory.
    partial: Option<PathBuf>,
}

impl SpilledCapture {
    /// A new, empty capture file (unnamed, in the temporary directory), and the writer the
    /// simulator streams into.
    pub fn create() -> std::io::Result<(SpilledCapture, Box<dyn Write>)> {
        Self::spill(tempfile::tempfile()?, None)
    }

    /// A new, empty capture of `segment` in `dir`: `<segment>.pcap.partial`, which
    /// [`SpilledCapture::move_to`] renames to the output's name.
    pub fn create_in(
        dir: &Path,
        segment: &str,
    ) -> std::io::Result<(SpilledCapture, Box<dyn Write>)> {
        let path = dir.join(format!("{segment}.pcap.partial"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Self::spill(file, Some(path))
    }

    fn spill(
        file: File,
        partial: Option<PathBuf>,
    ) -> std::io::Result<(SpilledCapture, Box<dyn Write>)> {
        let writer = CaptureWriter {
            inner: BufWriter::with_capacity(BUFFER, file.try_clone()?),
            written: 0,
        };
        Ok((SpilledCapture { file, partial }, Box::new(writer)))
    }

    /// The frames, in the order they crossed the segment.
    pub fn frames(
        &self,
    ) -> Result<impl Iterator<Item = Result<CapturedFrame, CaptureError>> + '_, CaptureError> {
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0))?;
        // Unbuffered: the read-back reads 64 KiB at a time itself.
        netsim::wire::read_pcap(file)
    }

    /// Copies the pcap file into `out`.
    pub fn copy_to<W: Write>(&self, mut out: W) -> std::io::Result<W> {
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut file, &mut out)?;
        Ok(out)
    }

    /// Renames a capture written in the output directory to `path` in the same directory:
    /// true if it was; false if the capture is a temporary file, lies in another directory or
    /// was renamed before (then it is copied: [`SpilledCapture::copy_to`] reads the open file,
    /// whatever its name).
    pub fn move_to(&self, path: &Path) -> std::io::Result<bool> {
        let Some(partial) = self
            .partial
            .as_ref()
            .filter(|partial| partial.parent() == path.parent())
        else {
            return Ok(false);
        };
        match std::fs::rename(partial, path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// A capture's writer: buffered in [`BUFFER`] bytes, then in [`BUSY_BUFFER`] once the
/// segment has written [`BUSY`] bytes.
struct CaptureWriter {
    inner: BufWriter<File>,
    written: u64,
}

impl CaptureWriter {
    fn grow_when_busy(&mut self) -> std::io::Result<()> {
        if self.written >= BUSY && self.inner.capacity() < BUSY_BUFFER {
            self.inner.flush()?;
            let file = self.inner.get_ref().try_clone()?;
            self.inner = BufWriter::with_capacity(BUSY_BUFFER, file);
        }
        Ok(())
    }
}

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.grow_when_busy()?;
        let n = self.inner.write(data)?;
        self.written += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.grow_when_busy()?;
        self.inner.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Drop for SpilledCapture {
    /// A capture in the output directory that no output took is not left there half-named.
    fn drop(&mut self) {
        if let Some(partial) = &self.partial {
            let _ = std::fs::remove_file(partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netsim::{MacAddr, SimTime};

    fn frame(i: u8) -> CapturedFrame {
        CapturedFrame {
            time: SimTime::from_secs(u64::from(i)),
            src_mac: MacAddr([2, 0, 0, 0, 0, i]),
            dst_mac: MacAddr::BROADCAST,
            src: ([10, 0, 0, i], 68).into(),
            dst: ([255, 255, 255, 255], 67).into(),
            ttl: 64,
            ip_id: u16::from(i),
            payload: vec![i; 100 + usize::from(i)].into(),
        }
    }

    #[test]
    fn a_spilled_capture_reads_back_its_frames_and_copies_as_the_pcap_of_them() {
        let frames: Vec<CapturedFrame> = (1..6).map(frame).collect();
        let (capture, writer) = SpilledCapture::create().expect("temporary file");
        let mut stream = netsim::PcapStream::new(writer).expect("header");
        for f in &frames {
            stream.record_frame(f);
        }
        stream.finish().expect("flushed");
        let read: Vec<CapturedFrame> = capture
            .frames()
            .expect("header")
            .collect::<Result<_, _>>()
            .expect("frames");
        assert_eq!(read, frames);
        // Twice: each reading starts from the beginning.
        assert_eq!(capture.frames().expect("header").count(), frames.len());
        let copied = capture.copy_to(Vec::new()).expect("copied");
        assert_eq!(copied, netsim::wire::pcap_bytes(&frames).expect("pcap"));
    }

    #[test]
    fn a_busy_capture_writes_through_a_larger_buffer_and_loses_nothing() {
        let file = tempfile::tempfile().expect("temporary file");
        let mut writer = CaptureWriter {
            inner: BufWriter::with_capacity(BUFFER, file.try_clone().expect("dup")),
            written: 0,
        };
        let mut expected = Vec::new();
        let mut i = 0u32;
        while expected.len() < 3 * BUSY as usize {
            // Chunks of 1 to 700 bytes, and now and then one larger than either buffer.
            let len = if i % 1000 == 999 {
                300_000
            } else {
                1 + (i as usize * 37) % 700
            };
            let chunk: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            if i.is_multiple_of(2) {
                writer.write_all(&chunk).expect("written");
            } else {
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let n = writer.write(rest).expect("written");
                    rest = &rest[n..];
                }
            }
            expected.extend_from_slice(&chunk);
            let busy = expected.len() as u64 > BUSY;
            if !busy {
                assert_eq!(writer.inner.capacity(), BUFFER, "small while quiet");
            }
            i += 1;
        }
        assert_eq!(writer.inner.capacity(), BUSY_BUFFER, "large once busy");
        assert_eq!(writer.written, expected.len() as u64);
        writer.flush().expect("flushed");
        let mut file = file;
        file.seek(SeekFrom::Start(0)).expect("seek");
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut read).expect("read");
        assert!(read == expected, "the file holds every byte in order");
    }

    fn written_in(dir: &Path, frames: &[CapturedFrame]) -> SpilledCapture {
        let (capture, writer) = SpilledCapture::create_in(dir, "corp").expect("created");
        let mut stream = netsim::PcapStream::new(writer).expect("header");
        for f in frames {
            stream.record_frame(f);
        }
        stream.finish().expect("flushed");
        capture
    }

    #[test]
    fn a_capture_in_the_output_directory_is_renamed_once_then_copied() {
        let dir = tempfile::tempdir().expect("dir");
        let frames: Vec<CapturedFrame> = (1..6).map(frame).collect();
        let pcap = netsim::wire::pcap_bytes(&frames).expect("pcap");
        let capture = written_in(dir.path(), &frames);
        let partial = dir.path().join("corp.pcap.partial");
        assert!(partial.exists());
        let output = dir.path().join("corp.pcap");
        assert!(capture.move_to(&output).expect("renamed"));
        assert!(!partial.exists());
        assert_eq!(std::fs::read(&output).expect("output"), pcap);
        // Still readable under its new name, and a second output is a copy.
        assert_eq!(capture.frames().expect("header").count(), frames.len());
        assert!(
            !capture
                .move_to(&dir.path().join("again.pcap"))
                .expect("not renamed")
        );
        let elsewhere = tempfile::tempdir().expect("dir");
        let other = written_in(dir.path(), &frames);
        assert!(
            !other
                .move_to(&elsewhere.path().join("corp.pcap"))
                .expect("not moved")
        );
        assert_eq!(capture.copy_to(Vec::new()).expect("copied"), pcap);
        drop(capture);
        assert_eq!(
            std::fs::read(&output).expect("kept"),
            pcap,
            "the output stays"
        );
    }

    #[test]
    fn a_capture_no_output_took_is_deleted_with_the_run() {
        let dir = tempfile::tempdir().expect("dir");
        let capture = written_in(dir.path(), &(1..3).map(frame).collect::<Vec<_>>());
        drop(capture);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert!(left.is_empty(), "{left:?}");
        // A temporary capture has no name to move.
        let (temporary, _) = SpilledCapture::create().expect("temporary");
        assert!(
            !temporary
                .move_to(&dir.path().join("x.pcap"))
                .expect("no rename")
        );
    }
}
