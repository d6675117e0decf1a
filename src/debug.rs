//! `rgitaly debug simulate-clone` and `rgitaly debug analyze-clone`: the analogue of upstream's
//! gitaly-debug, for an operator chasing a slow clone.
//!
//! simulate-clone does what `git clone` over Smart HTTP asks of the daemon (InfoRefsUploadPack, then one
//! PostUploadPack wanting every advertised ref, side-band-64k, as Workhorse relays it) and writes no
//! repository: the answer is counted as it streams and dropped (or saved with `--save`). analyze-clone
//! reads such a saved answer (or any captured upload-pack response body) and reports the same figures
//! without timings.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_stream::StreamExt;

use crate::client;
use crate::proto::gitaly::smart_http_service_client::SmartHttpServiceClient;
use crate::proto::gitaly::{InfoRefsRequest, PostUploadPackRequest, Repository};

/// What a clone cost, phase by phase.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Report {
    /// Refs advertised, and the distinct objects wanted.
    pub refs: usize,
    pub wants: usize,
    pub advertisement_bytes: u64,
    /// Milliseconds from the start: the advertisement received; the first byte of the answer to the
    /// wants; the first byte of pack data; the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertisement_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_response_byte_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_pack_byte_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
    /// Bytes of the whole answer, of pack data (side band 1), of progress (band 2).
    pub response_bytes: u64,
    pub pack_bytes: u64,
    pub progress_bytes: u64,
    /// From the pack header.
    pub pack_version: u32,
    pub objects: u32,
    /// Pack bytes per second over the pack phase (first pack byte to the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_mib_per_s: Option<f64>,
    /// What the server said on side band 3, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    pub fn render(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"));
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<24}{v}\n"));
        line("refs advertised", self.refs.to_string());
        line("objects wanted", self.wants.to_string());
        line("advertisement", format!("{} bytes in {}", self.advertisement_bytes, ms(self.advertisement_ms)));
        line("first response byte", ms(self.first_response_byte_ms));
        line("first pack byte", ms(self.first_pack_byte_ms));
        line("total", ms(self.total_ms));
        line("response", format!("{} bytes", self.response_bytes));
        line("pack", format!("{} bytes, version {}, {} objects", self.pack_bytes, self.pack_version, self.objects));
        line("progress messages", format!("{} bytes", self.progress_bytes));
        if let Some(t) = self.pack_mib_per_s {
            line("pack throughput", format!("{t:.1} MiB/s"));
        }
        if let Some(e) = &self.error {
            line("server error", e.clone());
        }
        out
    }
}

/// Reads an upload-pack answer as it arrives: pkt-lines, then side-band packets.
#[derive(Default)]
struct Analyzer {
    buf: Vec<u8>,
    report: Report,
    pack_head: Vec<u8>,
    first_pack_at: Option<Instant>,
}

impl Analyzer {
    fn feed(&mut self, data: &[u8], now: Instant) -> Result<(), String> {
        self.report.response_bytes += data.len() as u64;
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(data);
        let mut at = 0;
        while at < buf.len() {
            let consumed = match gix_packetline::decode::streaming(&buf[at..]).map_err(|e| e.to_string())? {
                gix_packetline::decode::Stream::Incomplete { .. } => break,
                gix_packetline::decode::Stream::Complete { line, bytes_consumed } => {
                    if let gix_packetline::PacketLineRef::Data(d) = line {
                        self.packet(d, now);
                    }
                    bytes_consumed
                }
            };
            at += consumed;
        }
        buf.drain(..at);
        self.buf = buf;
        Ok(())
    }

    fn packet(&mut self, d: &[u8], now: Instant) {
        // Negotiation lines ("NAK", "ACK …") come before the side band starts.
        if d.starts_with(b"NAK") || d.starts_with(b"ACK") || d.starts_with(b"shallow") {
            return;
        }
        let (band, payload) = match d.split_first() {
            Some((b, p)) => (*b, p),
            None => return,
        };
        match band {
            1 => {
                self.first_pack_at.get_or_insert(now);
                self.report.pack_bytes += payload.len() as u64;
                if self.pack_head.len() < 12 {
                    let need = 12 - self.pack_head.len();
                    self.pack_head.extend_from_slice(&payload[..payload.len().min(need)]);
                    if self.pack_head.len() == 12 && &self.pack_head[..4] == b"PACK" {
                        self.report.pack_version =
                            u32::from_be_bytes(self.pack_head[4..8].try_into().unwrap_or_default());
                        self.report.objects = u32::from_be_bytes(self.pack_head[8..12].try_into().unwrap_or_default());
                    }
                }
            }
            2 => self.report.progress_bytes += payload.len() as u64,
            3 => self.report.error = Some(String::from_utf8_lossy(payload).trim_end().to_string()),
            _ => {}
        }
    }
}

/// `rgitaly debug analyze-clone FILE`.
pub fn analyze(data: &[u8]) -> Result<Report, String> {
    let mut a = Analyzer::default();
    a.feed(data, Instant::now())?;
    if !a.buf.is_empty() {
        return Err(format!("the answer ends inside a packet ({} bytes left over)", a.buf.len()));
    }
    Ok(a.report)
}

/// The refs of an advertisement (`InfoRefsUploadPack`'s answer): (object id, name), peeled entries left out.
fn advertised(data: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut refs = Vec::new();
    let mut at = 0;
    while at < data.len() {
        match gix_packetline::decode::streaming(&data[at..]).map_err(|e| e.to_string())? {
            gix_packetline::decode::Stream::Incomplete { .. } => {
                return Err("advertisement ends inside a packet".into())
            }
            gix_packetline::decode::Stream::Complete { line, bytes_consumed } => {
                at += bytes_consumed;
                let gix_packetline::PacketLineRef::Data(d) = line else { continue };
                if d.starts_with(b"#") {
                    continue;
                }
                let d = d.split(|b| *b == 0).next().unwrap_or_default();
                let text = String::from_utf8_lossy(d).trim_end().to_string();
                if let Some((oid, name)) = text.split_once(' ') {
                    if !name.ends_with("^{}") && name != "capabilities^{}" {
                        refs.push((oid.to_string(), name.to_string()));
                    }
                }
            }
        }
    }
    Ok(refs)
}

fn pkt(line: &str) -> Vec<u8> {
    crate::pktline::encode(line.as_bytes())
}

/// `rgitaly debug simulate-clone STORAGE/PATH`: returns the report, and the raw answer when `keep`.
pub async fn simulate(
    address: &str,
    token: Option<&str>,
    target: &str,
    keep: bool,
) -> Result<(Report, Vec<u8>), String> {
    let (storage, path) = target.split_once('/').ok_or("expected STORAGE/PATH, e.g. default/group/project.git")?;
    let repository = Repository { storage_name: storage.into(), relative_path: path.into(), ..Default::default() };
    let channel = client::connect(address, token).await.map_err(|e| e.to_string())?;
    let mut client = SmartHttpServiceClient::new(channel)
        .max_decoding_message_size(crate::transport::MAX_MESSAGE)
        .max_encoding_message_size(crate::transport::MAX_MESSAGE);
    let started = Instant::now();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    let req = InfoRefsRequest { repository: Some(repository.clone()), ..Default::default() };
    let mut stream = client.info_refs_upload_pack(req).await.map_err(|e| e.message().to_string())?.into_inner();
    let mut adv = Vec::new();
    while let Some(m) = stream.message().await.map_err(|e| e.message().to_string())? {
        adv.extend_from_slice(&m.data);
    }
    let mut report = Report {
        advertisement_bytes: adv.len() as u64,
        advertisement_ms: Some(ms(started.elapsed())),
        ..Default::default()
    };
    let refs = advertised(&adv)?;
    report.refs = refs.len();
    let mut wants: Vec<&str> = refs.iter().map(|(oid, _)| oid.as_str()).collect();
    wants.sort_unstable();
    wants.dedup();
    report.wants = wants.len();
    if wants.is_empty() {
        report.total_ms = Some(ms(started.elapsed()));
        return Ok((report, Vec::new()));
    }
    let mut body = Vec::new();
    for (i, oid) in wants.iter().enumerate() {
        let caps =
            if i == 0 { " multi_ack_detailed side-band-64k ofs-delta thin-pack agent=rgitaly-debug" } else { "" };
        body.extend_from_slice(&pkt(&format!("want {oid}{caps}\n")));
    }
    body.extend_from_slice(b"0000");
    body.extend_from_slice(&pkt("done\n"));
    // The repository alone first (a first message with data is refused, as upstream), then the wants.
    let first = PostUploadPackRequest { repository: Some(repository.clone()), ..Default::default() };
    let requests = std::iter::once(first)
        .chain(
            body.chunks(crate::service::chunk::DATA_CHUNK)
                .map(|c| PostUploadPackRequest { data: c.to_vec().into(), ..Default::default() }),
        )
        .collect::<Vec<_>>();
    let mut answer =
        client.post_upload_pack(tokio_stream::iter(requests)).await.map_err(|e| e.message().to_string())?.into_inner();
    let mut analyzer = Analyzer::default();
    let mut saved = Vec::new();
    while let Some(m) = answer.next().await {
        let m = m.map_err(|e| e.message().to_string())?;
        let now = Instant::now();
        report.first_response_byte_ms.get_or_insert(ms(now - started));
        analyzer.feed(&m.data, now)?;
        if keep {
            saved.extend_from_slice(&m.data);
        }
    }
    let end = Instant::now();
    let mut out = analyzer.report;
    out.refs = report.refs;
    out.wants = report.wants;
    out.advertisement_bytes = report.advertisement_bytes;
    out.advertisement_ms = report.advertisement_ms;
    out.first_response_byte_ms = report.first_response_byte_ms;
    out.first_pack_byte_ms = analyzer.first_pack_at.map(|t| ms(t - started));
    out.total_ms = Some(ms(end - started));
    out.pack_mib_per_s = analyzer.first_pack_at.map(|t| {
        let secs = (end - t).as_secs_f64().max(1e-6);
        out.pack_bytes as f64 / (1024.0 * 1024.0) / secs
    });
    Ok((out, saved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_band_by_band() {
        let mut data = pkt("NAK\n");
        let mut pack = b"PACK".to_vec();
        pack.extend_from_slice(&2u32.to_be_bytes());
        pack.extend_from_slice(&7u32.to_be_bytes());
        pack.extend_from_slice(b"rest of the pack");
        let band = |b: u8, payload: &[u8]| {
            let mut p = vec![b];
            p.extend_from_slice(payload);
            crate::pktline::encode(&p)
        };
        data.extend_from_slice(&band(2, b"Counting objects\n"));
        data.extend_from_slice(&band(1, &pack[..6]));
        data.extend_from_slice(&band(1, &pack[6..]));
        data.extend_from_slice(b"0000");
        let r = analyze(&data).unwrap();
        assert_eq!((r.pack_version, r.objects, r.pack_bytes, r.progress_bytes), (2, 7, pack.len() as u64, 17));
        assert!(analyze(&data[..data.len() - 6]).is_err(), "a cut answer is reported");
        let mut failed = pkt("NAK\n");
        failed.extend_from_slice(&band(3, b"upload-pack: not our ref\n"));
        assert_eq!(analyze(&failed).unwrap().error.as_deref(), Some("upload-pack: not our ref"));
    }
}
