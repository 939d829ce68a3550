//! A segment's capture, spilled to an unnamed temporary file as the run goes: the simulator
//! writes each frame as it crosses the segment into a pcap stream, as `tcpdump -w` would, so a
//! storm's hundreds of thousands of frames never sit in memory beside its 10,000 machines. After
//! the run the file is read back frame by frame for the decoding, and copied whole into the
//! segment's `.pcap` output. The operating system deletes the file when the run is dropped.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};

use netsim::{CaptureError, CapturedFrame};

/// The write buffer of each segment's capture: a storm has a segment per 100 clients, and
/// 1,001 buffers of 64 KiB were 64 MiB of a 100,000-client run (8 KiB is a page-cache write
/// every few dozen frames).
const BUFFER: usize = 8 * 1024;

/// The capture file of one segment.
#[derive(Debug)]
pub struct SpilledCapture {
    file: File,
}

impl SpilledCapture {
    /// A new, empty capture file, and the writer the simulator streams into.
    pub fn create() -> std::io::Result<(SpilledCapture, Box<dyn Write>)> {
        let file = tempfile::tempfile()?;
        let writer = BufWriter::with_capacity(BUFFER, file.try_clone()?);
        Ok((SpilledCapture { file }, Box::new(writer)))
    }

    /// The frames, in the order they crossed the segment.
    pub fn frames(
        &self,
    ) -> Result<impl Iterator<Item = Result<CapturedFrame, CaptureError>> + '_, CaptureError> {
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0))?;
        // Unbuffered: the read-back reads a quarter of a megabyte at a time itself.
        netsim::wire::read_pcap(file)
    }

    /// Copies the pcap file into `out`.
    pub fn copy_to<W: Write>(&self, mut out: W) -> std::io::Result<W> {
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut file, &mut out)?;
        Ok(out)
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
}
