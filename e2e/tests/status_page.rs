//! The master's status page (`/status` on its admin port) with real
//! processes, read as HTML and rendered by headless Chromium: a master,
//! four chunkservers, one killed; the page shows the group, the dead
//! server, the files left short of replicas (their hostile names escaped)
//! and the repair of the file that could be repaired. The screenshot must
//! show the page's colours: the header, a green and a red badge.
//!
//! Chromium comes from Debian (`chromium`); `scripts/test.sh` installs it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gfs_client::Client;
use gfs_common::admin_http::get;
use gfs_e2e::{Proc, bin, free_addr, wait_for};

const CHUNK: usize = 64 * 1024;
const CHROMIUM: &str = "/usr/bin/chromium";
/// A file name a browser would run as markup if the page did not escape it.
const HOSTILE: &str = "/short/<img src=x onerror=alert(1)>.bin";

async fn page(admin: SocketAddr) -> String {
    let (code, body) = get(admin, "/status").await.expect("GET /status");
    assert_eq!(code, 200, "{body}");
    body
}

/// Runs headless Chromium with the flags this closed network needs.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does: apt-get install chromium)"
    );
    let out = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--hide-scrollbars", "--force-device-scale-factor=1"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// (width, height, RGBA pixels) of a PNG file.
fn decode(png_path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(png_path).expect("screenshot written");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    buf.truncate(info.buffer_size());
    let px = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        other => panic!("unexpected colour type {other:?}"),
    };
    (info.width, info.height, px)
}

/// Pixels of exactly `rgb`.
fn count(px: &[u8], rgb: [u8; 3]) -> usize {
    px.chunks(4).filter(|p| p[..3] == rgb).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_the_cluster_and_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let master = free_addr().to_string();
    let admin = free_addr();
    let _m = Proc::spawn(
        Command::new(bin("gfs-master"))
            .args(["--listen", &master, "--chunk-size", "64KiB", "--heartbeat-ms", "100"])
            .args(["--dead-after-ms", "1500", "--heal-scan-ms", "100", "--repair-delay-ms", "500"])
            // A dead primary's lease must run out before its chunk is copied.
            .args(["--lease-ms", "2000"])
            .args(["--admin-listen", &admin.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("master")),
        &dir.path().join("master.log"),
    );
    let addrs: Vec<String> = (0..4).map(|_| free_addr().to_string()).collect();
    let mut servers: Vec<Option<Proc>> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Some(Proc::spawn(
                Command::new(bin("gfs-chunkserver"))
                    .args(["--master", &master, "--listen", a, "--heartbeat-ms", "100", "--no-sync"])
                    .args(["--zone", &format!("z{i}"), "--scrub-interval-ms", "0"])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("cs{i}"))),
                &dir.path().join(format!("cs{i}.log")),
            ))
        })
        .collect();
    let mut cfg = gfs_e2e::client_config(master.clone());
    cfg.rpc_timeout = Duration::from_secs(5);
    let c = Client::new(cfg).unwrap();
    wait_for("4 live chunkservers", 60, || async {
        c.cluster_status().await.is_ok_and(|s| s.servers.iter().filter(|s| s.alive).count() == 4)
    })
    .await;

    // Two files that want a replica on every server (short for good once
    // one is gone), one of them with a name made of markup; one file of
    // replication 2 that can be repaired.
    let data: Vec<u8> = (0..2 * CHUNK).map(|i| (i % 251) as u8).collect();
    c.mkdir("/short", true).await.unwrap();
    for p in ["/short/all4.bin", HOSTILE] {
        c.create(p, Some(4)).await.unwrap();
        c.write_at(p, 0, &data).await.unwrap();
    }
    c.create("/two.bin", Some(2)).await.unwrap();
    c.write_at("/two.bin", 0, &data).await.unwrap();
    let before = page(admin).await;
    assert!(before.contains("id=\"no-short-files\""), "short files before any loss:\n{before}");

    // Kill a server holding /two.bin's first chunk: it dies on the page,
    // /two.bin is copied elsewhere, the replication-4 files stay short.
    let st = c.stat("/two.bin").await.unwrap();
    let victim_addr = st.chunks[0].replicas[0].address.clone();
    let victim = addrs.iter().position(|a| *a == victim_addr).expect("a replica on one of ours");
    servers[victim].take().unwrap().kill9();
    wait_for("/two.bin back at 2 replicas on live servers", 60, || async {
        c.stat("/two.bin").await.is_ok_and(|s| {
            s.chunks.iter().all(|ch| ch.replicas.len() == 2 && ch.replicas.iter().all(|r| r.address != victim_addr))
        })
    })
    .await;
    wait_for("a completed repair on the page", 30, || async { page(admin).await.contains("id=\"repairs\"") }).await;

    let html = page(admin).await;
    assert!(html.contains("<span class=\"badge ok\">leader</span>"), "{html}");
    assert_eq!(html.matches("<span class=\"badge bad\">dead</span>").count(), 1, "one dead server:\n{html}");
    assert_eq!(html.matches("<span class=\"badge ok\">live</span>").count(), 3, "three live servers:\n{html}");
    assert!(html.contains(&victim_addr), "the dead server's address:\n{html}");
    assert!(html.contains("<td class=\"path\">/short/all4.bin</td><td>2 of 2</td><td>4</td>"), "{html}");
    assert!(!html.contains("<img"), "a file name was written as markup:\n{html}");
    assert!(html.contains("/short/&lt;img src=x onerror=alert(1)&gt;.bin"), "{html}");
    assert!(!html.contains(">/two.bin<"), "a repaired file is listed as short:\n{html}");
    assert!(html.contains("re-replicate") && html.contains("badge ok\">done"), "{html}");
    assert!(html.contains("id=\"files\">3<"), "3 files:\n{html}");

    // Chromium: the DOM it built, then a screenshot.
    let url = format!("http://{admin}/status");
    let profile = dir.path().join("chromium-profile");
    let dom = String::from_utf8(chromium(&profile, &["--dump-dom", &url]).stdout).unwrap();
    assert!(dom.contains("id=\"chunkservers\""), "{dom}");
    assert!(!dom.contains("<img"), "the browser built an element from a file name:\n{dom}");
    assert_eq!(dom.matches("class=\"path\"").count(), 2, "two short files in the DOM:\n{dom}");
    let shot = dir.path().join("status.png");
    chromium(&profile, &["--window-size=1280,1400", &format!("--screenshot={}", shot.display()), &url]);
    let (w, h, px) = decode(&shot);
    assert_eq!((w, h), (1280, 1400));
    let header = count(&px, [0x1d, 0x35, 0x57]);
    let green = count(&px, [0x1e, 0x84, 0x49]);
    let red = count(&px, [0xc0, 0x39, 0x2b]);
    // The header spans the width; badges are pills of 10+ px a side.
    assert!(header > 1280 * 30, "header colour on {header} pixels: not rendered");
    assert!(green > 400, "green (leader, live, done) badges on {green} pixels");
    assert!(red > 100, "red (dead) badge on {red} pixels");
    eprintln!("screenshot {w}x{h}: header {header} px, green {green} px, red {red} px");
    // GFS_STATUS_SCREENSHOT=PATH keeps the screenshot, to look at.
    if let Some(keep) = std::env::var_os("GFS_STATUS_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
