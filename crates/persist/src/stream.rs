//! One file written as it is produced: the producer fills aligned 4 MiB buffers and a writer
//! thread checksums them (CRC-32C) and writes them, so encoding and I/O overlap. The file is
//! opened with direct I/O (`O_DIRECT`) where the file system allows it: the bytes go from the
//! buffer to the disk without a copy into the page cache, which doubles the write rate on the
//! machines we measured (docs/benchmarks.md). Where direct I/O is refused, at open or at the
//! first write, the same buffers are written through the page cache. The file is fsynced
//! before [`write_file`] returns.
//!
//! Reading is the mirror: a [`PieceReader`] thread reads 8 MiB pieces (direct I/O where
//! allowed) and checksums them while the caller decodes the pieces before; [`read_file`]
//! collects them for a small file read whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes per buffer (a multiple of [`ALIGN`]).
const BUF: usize = 4 << 20;
/// Alignment of direct I/O buffers, offsets and lengths.
const ALIGN: usize = 4096;

/// A buffer whose data starts on an [`ALIGN`] boundary.
struct Aligned {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new() -> Aligned {
        let raw = vec![0u8; BUF + ALIGN];
        let off = raw.as_ptr().align_offset(ALIGN);
        assert!(off < ALIGN, "a byte buffer can be aligned");
        Aligned { raw, off, len: 0 }
    }

    fn data(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }

    /// The data padded with zeros to a multiple of [`ALIGN`] (direct I/O writes whole blocks).
    fn padded(&mut self) -> &[u8] {
        let end = self.len.next_multiple_of(ALIGN);
        self.raw[self.off + self.len..self.off + end].fill(0);
        &self.raw[self.off..self.off + end]
    }
}

fn open(path: &Path) -> io::Result<(File, bool)> {
    let direct = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path);
    match direct {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
            let f = OpenOptions::new().write(true).create_new(true).open(path)?;
            Ok((f, false))
        }
        Err(e) => Err(e),
    }
}

/// Turns direct I/O off for `file` (after the file system refused a direct write).
fn stop_direct(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - rustix::fs::OFlags::DIRECT)?;
    Ok(())
}

fn write_block(file: &mut File, buf: &mut Aligned, direct: &mut bool) -> io::Result<()> {
    if *direct {
        match file.write_all(buf.padded()) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                // Nothing of a refused direct write reached the file: write it buffered.
                stop_direct(file)?;
                *direct = false;
            }
            Err(e) => return Err(e),
        }
    }
    file.write_all(buf.data())
}

/// What the producer writes into.
struct Sink {
    cur: Option<Aligned>,
    full: SyncSender<Aligned>,
    empty: Receiver<Aligned>,
}

fn writer_gone() -> io::Error {
    io::Error::other("the file writer stopped")
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < data.len() {
            let buf = self.cur.as_mut().ok_or_else(writer_gone)?;
            let k = (BUF - buf.len).min(data.len() - done);
            let at = buf.off + buf.len;
            buf.raw[at..at + k].copy_from_slice(&data[done..done + k]);
            buf.len += k;
            done += k;
            if buf.len == BUF {
                let full = self.cur.take().expect("a buffer");
                self.full.send(full).map_err(|_| writer_gone())?;
                self.cur = Some(self.empty.recv().map_err(|_| writer_gone())?);
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Creates `path` (which must not exist), fills it with what `body` writes, fsyncs it, and
/// returns its length and CRC-32C.
pub fn write_file(
    path: &Path,
    body: &dyn Fn(&mut dyn Write) -> io::Result<()>,
) -> io::Result<(u64, u32)> {
    let (file, direct) = open(path)?;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<Aligned>(1);
        let (empty_tx, empty_rx) = sync_channel::<Aligned>(2);
        // The second buffer, filled while the writer writes the first.
        empty_tx.send(Aligned::new()).expect("the receiver is here");
        let writer = scope.spawn(move || -> io::Result<(u64, u32)> {
            let (mut file, mut direct) = (file, direct);
            let (mut len, mut crc) = (0u64, 0u32);
            for mut buf in full_rx {
                crc = crc32c::crc32c_append(crc, buf.data());
                len += buf.len as u64;
                write_block(&mut file, &mut buf, &mut direct)?;
                buf.len = 0;
                // The producer may be done and gone: an unused buffer is simply dropped.
                let _ = empty_tx.send(buf);
            }
            if direct {
                // The last block was padded to a whole block: cut the padding off.
                file.set_len(len)?;
            }
            file.sync_all()?;
            Ok((len, crc))
        });
        let mut sink = Sink {
            cur: Some(Aligned::new()),
            full: full_tx,
            empty: empty_rx,
        };
        let produced = body(&mut sink).and_then(|()| match sink.cur.take() {
            Some(last) if last.len > 0 => sink.full.send(last).map_err(|_| writer_gone()),
            _ => Ok(()),
        });
        drop(sink);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the file writer panicked")));
        // The writer's own error says more than the producer's "writer stopped".
        match (produced, written) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(r)) => Ok(r),
        }
    })
}

/// Reads a whole file with its length and CRC-32C, through a [`PieceReader`] (direct I/O in
/// 8 MiB requests where the file system allows it, the page cache elsewhere).
pub fn read_file(path: &Path) -> io::Result<(Vec<u8>, u32)> {
    let mut r = PieceReader::open(path)?;
    let mut bytes = Vec::new();
    let mut spent = Vec::new();
    while let Some((buf, range)) = r.next_piece(spent)? {
        bytes.extend_from_slice(&buf[range]);
        spent = buf;
    }
    let (_, crc) = r.finish()?;
    Ok((bytes, crc))
}

/// Bytes per read request and per piece (a multiple of [`ALIGN`]).
const PIECE: usize = 8 << 20;

/// The pieces a [`PieceReader`] hands out: a buffer and the range of it that holds the file's
/// next bytes.
pub type Piece = (Vec<u8>, std::ops::Range<usize>);

/// Buffers a reader uses at most: one being decoded, one waiting, one being read.
const PIECE_BUFFERS: usize = 3;

enum Msg {
    Piece(Piece),
    End { bytes: u64, crc: u32 },
    Failed(io::Error),
}

/// A file read by a thread of its own in [`PIECE`]-sized pieces, with direct I/O where the file
/// system allows it, while the caller decodes the pieces before. The CRC-32C and the length
/// are taken on the reader thread and known once the last piece is read ([`PieceReader::finish`]).
/// Three buffers are reused for the whole file, so reading a file of any size touches no new
/// memory beyond them.
pub struct PieceReader {
    pieces: Receiver<Msg>,
    spare: std::sync::mpsc::Sender<Vec<u8>>,
    end: Option<io::Result<(u64, u32)>>,
}

impl PieceReader {
    /// Opens `path` (a missing file fails here) and starts reading it.
    pub fn open(path: &Path) -> io::Result<PieceReader> {
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path);
        let (file, direct) = match direct {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                (File::open(path)?, false)
            }
            Err(e) => return Err(e),
        };
        let (tx, pieces) = sync_channel(1);
        let (spare, free) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("sluice-restore-read".into())
            .spawn(move || pump(file, direct, &path, &tx, &free))?;
        Ok(PieceReader {
            pieces,
            spare,
            end: None,
        })
    }

    /// The next piece, `None` at the end of the file. `spent` is the buffer of the piece
    /// before, handed back for reuse (an empty `Vec` the first time).
    pub fn next_piece(&mut self, spent: Vec<u8>) -> io::Result<Option<Piece>> {
        if spent.capacity() > 0 {
            let _ = self.spare.send(spent);
        }
        if let Some(end) = &self.end {
            return match end {
                Ok(_) => Ok(None),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
        }
        match self.pieces.recv() {
            Ok(Msg::Piece(p)) => Ok(Some(p)),
            Ok(Msg::End { bytes, crc }) => {
                self.end = Some(Ok((bytes, crc)));
                Ok(None)
            }
            Ok(Msg::Failed(e)) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.end = Some(Err(e));
                Err(copy)
            }
            Err(_) => {
                let e = io::Error::other("the reader thread stopped");
                self.end = Some(Err(io::Error::other("the reader thread stopped")));
                Err(e)
            }
        }
    }

    /// Reads whatever the caller did not take and returns the file's length and CRC-32C.
    pub fn finish(mut self) -> io::Result<(u64, u32)> {
        while self.next_piece(Vec::new())?.is_some() {}
        self.end.take().expect("the end of the file was reached")
    }
}

/// The reader thread: pieces into the channel until the end of the file, the consumer leaves,
/// or a read fails.
fn pump(
    mut file: File,
    mut direct: bool,
    path: &Path,
    tx: &SyncSender<Msg>,
    free: &Receiver<Vec<u8>>,
) {
    if !direct {
        advise_sequential(&file);
    }
    let mut made = 0;
    let mut crc = 0u32;
    let mut at: u64 = 0;
    let mut held: Option<Vec<u8>> = None;
    loop {
        let mut buf = match held.take().map_or_else(|| free.try_recv(), Ok) {
            Ok(b) => b,
            Err(_) if made < PIECE_BUFFERS => {
                made += 1;
                vec![0u8; PIECE + ALIGN]
            }
            Err(_) => match free.recv() {
                Ok(b) => b,
                Err(_) => return, // the consumer is gone
            },
        };
        let off = buf.as_ptr().align_offset(ALIGN);
        assert!(off < ALIGN, "a byte buffer can be aligned");
        let (n, eof) = match read_piece(&mut file, &mut buf[off..off + PIECE], direct) {
            Ok(r) => r,
            Err(e)
                if direct && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
            {
                // Direct I/O refused at the first read: this piece again through the page cache.
                let reopened = File::open(path).and_then(|mut f| {
                    use std::io::Seek;
                    f.seek(io::SeekFrom::Start(at))?;
                    Ok(f)
                });
                match reopened {
                    Ok(f) => {
                        file = f;
                        direct = false;
                        advise_sequential(&file);
                        held = Some(buf);
                        continue;
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Failed(e));
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed(e));
                return;
            }
        };
        crc = crc32c::crc32c_append(crc, &buf[off..off + n]);
        at += n as u64;
        if n > 0 && tx.send(Msg::Piece((buf, off..off + n))).is_err() {
            return;
        }
        if eof {
            let _ = tx.send(Msg::End { bytes: at, crc });
            return;
        }
    }
}

fn advise_sequential(file: &File) {
    // Advice only: a file system without it reads the same bytes.
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::Sequential);
}

/// Fills `buf` from `file`; returns the bytes read and whether the file ended. A direct read
/// that returns a part of a block is the end of the file (the next offset is not aligned).
fn read_piece(file: &mut File, buf: &mut [u8], direct: bool) -> io::Result<(usize, bool)> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => return Ok((n, true)),
            Ok(k) => {
                n += k;
                if direct && k % ALIGN != 0 {
                    return Ok((n, true));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// A file read through a [`PieceReader`]: its bytes, and the length and checksum it gives.
    fn read_in_pieces(path: &Path) -> (Vec<u8>, (u64, u32)) {
        let mut r = PieceReader::open(path).unwrap();
        let mut bytes = Vec::new();
        let mut spent = Vec::new();
        while let Some((buf, range)) = r.next_piece(spent).unwrap() {
            assert!(range.len() <= PIECE);
            bytes.extend_from_slice(&buf[range]);
            spent = buf;
        }
        (bytes, r.finish().unwrap())
    }

    #[test]
    fn files_of_every_shape_read_back_whole_with_their_checksum() {
        let dir = tempfile::tempdir().unwrap();
        for (i, n) in [
            0,
            1,
            4095,
            4096,
            4097,
            BUF - 1,
            BUF,
            BUF + 1,
            3 * BUF + 12345,
        ]
        .into_iter()
        .enumerate()
        {
            let want = pattern(n);
            let path = dir.path().join(format!("f{i}"));
            // Written in uneven pieces, as an encoder does.
            let (len, crc) = write_file(&path, &|out: &mut dyn Write| {
                for piece in want.chunks(70_001) {
                    out.write_all(piece)?;
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(len, n as u64, "length of {n}");
            assert_eq!(crc, crc32c::crc32c(&want), "checksum of {n}");
            assert_eq!(std::fs::read(&path).unwrap(), want, "contents of {n}");
            assert_eq!(
                read_file(&path).unwrap(),
                (want.clone(), crc),
                "read back {n}"
            );
            assert_eq!(
                read_in_pieces(&path),
                (want.clone(), (n as u64, crc)),
                "read back in pieces {n}"
            );
        }
    }

    #[test]
    fn pieces_cover_files_around_the_piece_size_and_a_reader_left_early_still_checks_all() {
        let dir = tempfile::tempdir().unwrap();
        for n in [PIECE - 1, PIECE, PIECE + 1, 2 * PIECE + 4097] {
            let want = pattern(n);
            let path = dir.path().join(format!("p{n}"));
            std::fs::write(&path, &want).unwrap();
            let crc = crc32c::crc32c(&want);
            assert_eq!(
                read_in_pieces(&path),
                (want.clone(), (n as u64, crc)),
                "{n}"
            );
            // A decoder that stops after the first piece: the rest is still read and checked.
            let mut r = PieceReader::open(&path).unwrap();
            let (buf, range) = r.next_piece(Vec::new()).unwrap().unwrap();
            assert_eq!(&buf[range], &want[..PIECE.min(n)]);
            assert_eq!(r.finish().unwrap(), (n as u64, crc), "{n} left early");
            // One dropped half way does not hang.
            let mut r = PieceReader::open(&path).unwrap();
            r.next_piece(Vec::new()).unwrap();
            drop(r);
        }
        let missing = PieceReader::open(&dir.path().join("nothing here"))
            .err()
            .unwrap();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_file_system_without_direct_io_gets_the_same_bytes() {
        // tmpfs refuses O_DIRECT on many kernels: the buffered path is taken there.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            eprintln!("no /dev/shm here: the buffered fallback is not exercised");
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let want = pattern(BUF + 4097);
        let path = dir.path().join("f");
        let (len, crc) = write_file(&path, &|out: &mut dyn Write| out.write_all(&want)).unwrap();
        assert_eq!((len, crc), (want.len() as u64, crc32c::crc32c(&want)));
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(read_file(&path).unwrap(), (want.clone(), crc));
        let n = want.len() as u64;
        assert_eq!(read_in_pieces(&path), (want, (n, crc)));
    }

    #[test]
    fn a_failing_producer_fails_the_write_and_an_existing_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let err = write_file(&path, &|out: &mut dyn Write| {
            out.write_all(&pattern(BUF + 10))?;
            Err(io::Error::other("encoder failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "encoder failed");
        let err = write_file(&path, &|_: &mut dyn Write| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
