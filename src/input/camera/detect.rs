//! Finding the camera for `camera.device = "auto"`.
//!
//! A Raspberry Pi has several V4L2 nodes that are not cameras: the codec
//! and ISP (memory-to-memory, some of whose nodes do claim VIDEO_CAPTURE),
//! and a UVC webcam adds a metadata node beside its capture node. The rule,
//! in [`choose`] (pure): a node whose device capabilities include
//! VIDEO_CAPTURE and STREAMING, that is no memory-to-memory device, whose
//! driver is none of the Pi's codec/ISP drivers, and that offers a pixel
//! format the kiosk can convert (MJPEG, YUYV, GREY); USB cameras first, then
//! by node number. The choice is made again at every (re)open, so a camera
//! plugged in later, or moved to another port, is found.
//!
//! [`VideoNodes`] lists the nodes: [`SysfsVideoNodes`] walks
//! `/sys/class/video4linux` and asks each `/dev/videoN` (VIDIOC_QUERYCAP,
//! VIDIOC_ENUM_FMT); [`FixtureVideoNodes`] reads the same tree from a
//! directory where each node also holds its answers as data files (tests).

use std::path::{Path, PathBuf};

/// The `camera.device` value that asks for detection.
pub const AUTO: &str = "auto";

/// V4L2 capability bits (linux/videodev2.h).
pub const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
pub const CAP_VIDEO_M2M: u32 = 0x0000_8000;
pub const CAP_META_CAPTURE: u32 = 0x0080_0000;
pub const CAP_STREAMING: u32 = 0x0400_0000;

/// Drivers whose capture nodes are the output side of a codec or an image
/// signal processor on the Raspberry Pi, never a camera.
const NOT_CAMERAS: &[&str] = &[
    "bcm2835-codec",
    "bcm2835-isp",
    "pispbe",
    "rpivid",
    "rpi-hevc-dec",
];

/// Pixel formats the kiosk converts (see `PixelFormat`).
const USABLE_FOURCCS: &[&[u8; 4]] = &[b"MJPG", b"JPEG", b"YUYV", b"GREY"];

/// One `/dev/videoN` as detection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoNode {
    /// The device node, `/dev/videoN`.
    pub dev: PathBuf,
    pub number: u32,
    pub driver: String,
    /// `bus_info`, e.g. `usb-0000:01:00.0-1.3` or `platform:bcm2835-isp`.
    pub bus: String,
    /// The node's own capabilities (`device_caps`).
    pub device_caps: u32,
    /// Capture formats offered (fourcc codes).
    pub formats: Vec<[u8; 4]>,
}

impl VideoNode {
    fn is_camera(&self) -> bool {
        let caps = self.device_caps;
        caps & CAP_VIDEO_CAPTURE != 0
            && caps & CAP_STREAMING != 0
            && caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) == 0
            && !NOT_CAMERAS.contains(&self.driver.as_str())
            && self.formats.iter().any(|f| USABLE_FOURCCS.contains(&f))
    }
}

/// The camera to use, if any.
pub fn choose(nodes: &[VideoNode]) -> Option<&VideoNode> {
    nodes
        .iter()
        .filter(|n| n.is_camera())
        .min_by_key(|n| (!n.bus.starts_with("usb"), n.number))
}

/// Lists the V4L2 nodes present now. A node that cannot be read is left
/// out (it may be mid-unplug); a missing class directory is an empty list.
pub trait VideoNodes: Send {
    fn nodes(&self) -> Vec<VideoNode>;
}

/// `videoN` entries of a video4linux class directory, by number.
fn numbered_entries(class_dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(class_dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let n = name.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The real lister: sysfs for the names, the device for its answers.
#[derive(Debug, Clone)]
pub struct SysfsVideoNodes {
    pub class_dir: PathBuf,
    pub dev_dir: PathBuf,
}

impl Default for SysfsVideoNodes {
    fn default() -> Self {
        SysfsVideoNodes {
            class_dir: PathBuf::from("/sys/class/video4linux"),
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

#[cfg(feature = "camera")]
impl VideoNodes for SysfsVideoNodes {
    fn nodes(&self) -> Vec<VideoNode> {
        use v4l::video::Capture;
        numbered_entries(&self.class_dir)
            .into_iter()
            .filter_map(|(number, _)| {
                let dev = self.dev_dir.join(format!("video{number}"));
                let d = v4l::Device::with_path(&dev).ok()?;
                let caps = d.query_caps().ok()?;
                let device_caps = caps.capabilities.bits();
                // Only capture nodes can answer ENUM_FMT for capture buffers.
                let formats = if device_caps & CAP_VIDEO_CAPTURE != 0 {
                    d.enum_formats()
                        .map(|v| v.into_iter().map(|f| f.fourcc.repr).collect())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                Some(VideoNode {
                    dev,
                    number,
                    driver: caps.driver,
                    bus: caps.bus,
                    device_caps,
                    formats,
                })
            })
            .collect()
    }
}

/// The test twin: a directory laid out like `/sys/class/video4linux`,
/// where `videoN/` also holds what the device would answer: `driver`,
/// `bus_info`, `device_caps` (hex) and `formats` (fourccs, space separated).
#[derive(Debug, Clone)]
pub struct FixtureVideoNodes {
    pub class_dir: PathBuf,
    /// Where the listed `videoN` device nodes are said to be.
    pub dev_dir: PathBuf,
}

impl VideoNodes for FixtureVideoNodes {
    fn nodes(&self) -> Vec<VideoNode> {
        let read = |dir: &Path, f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        numbered_entries(&self.class_dir)
            .into_iter()
            .filter_map(|(number, dir)| {
                let caps = read(&dir, "device_caps")?;
                let device_caps = u32::from_str_radix(caps.trim_start_matches("0x"), 16).ok()?;
                let formats = read(&dir, "formats")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|f| f.as_bytes().try_into().ok())
                    .collect();
                Some(VideoNode {
                    dev: self.dev_dir.join(format!("video{number}")),
                    number,
                    driver: read(&dir, "driver")?,
                    bus: read(&dir, "bus_info").unwrap_or_default(),
                    device_caps,
                    formats,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::fixtures::materialize;

    fn detect(fixture: &str) -> Option<PathBuf> {
        let dir = materialize(fixture);
        let nodes = FixtureVideoNodes {
            class_dir: dir.path().join("class/video4linux"),
            dev_dir: PathBuf::from("/dev"),
        }
        .nodes();
        choose(&nodes).map(|n| n.dev.clone())
    }

    #[test]
    fn pi_with_usb_webcam_picks_the_capture_node() {
        // Codec (video10-12), ISP (13-16, 20-23, capture nodes offering
        // YUYV among them), the webcam's capture and metadata nodes.
        assert_eq!(
            detect("pi4-usb-webcam.tree"),
            Some(PathBuf::from("/dev/video0"))
        );
    }

    #[test]
    fn pi_without_camera_finds_none() {
        // Only the codec and the ISP: nothing to use, not "the first node".
        assert_eq!(detect("pi4-no-camera.tree"), None);
        assert_eq!(detect("empty.tree"), None);
    }

    #[test]
    fn usb_camera_wins_over_earlier_platform_capture() {
        // unicam (CSI, raw Bayer only) at video0; the webcam at video1 and its
        // metadata node at video2; vivid-style platform capture at video3.
        assert_eq!(
            detect("csi-and-usb.tree"),
            Some(PathBuf::from("/dev/video1"))
        );
    }

    #[test]
    fn rule_details() {
        let node = |n: u32, caps: u32, driver: &str, bus: &str, fmt: &[u8; 4]| VideoNode {
            dev: PathBuf::from(format!("/dev/video{n}")),
            number: n,
            driver: driver.into(),
            bus: bus.into(),
            device_caps: caps,
            formats: vec![*fmt],
        };
        let cap = CAP_VIDEO_CAPTURE | CAP_STREAMING;
        // Metadata-only and M2M nodes are no cameras.
        assert!(
            choose(&[node(
                0,
                CAP_META_CAPTURE | CAP_STREAMING,
                "uvcvideo",
                "usb-1",
                b"MJPG"
            )])
            .is_none()
        );
        assert!(choose(&[node(0, cap | CAP_VIDEO_M2M, "x", "platform:x", b"YUYV")]).is_none());
        // Without streaming we cannot mmap.
        assert!(choose(&[node(0, CAP_VIDEO_CAPTURE, "uvcvideo", "usb-1", b"MJPG")]).is_none());
        // Lower number first among equals; video10 sorts after video2.
        let both = [
            node(10, cap, "uvcvideo", "usb-2", b"YUYV"),
            node(2, cap, "uvcvideo", "usb-1", b"MJPG"),
        ];
        assert_eq!(choose(&both).map(|n| n.number), Some(2));
        // A platform capture node (e.g. vivid in the QEMU image) is used when
        // there is no USB camera.
        assert_eq!(
            choose(&[node(0, cap, "vivid", "platform:vivid-000", b"YUYV")]).map(|n| n.number),
            Some(0)
        );
    }

    #[cfg(feature = "camera")]
    #[test]
    fn real_lister_survives_a_tree_without_devices() {
        let dir = materialize("pi4-no-camera.tree");
        let real = SysfsVideoNodes {
            class_dir: dir.path().join("class/video4linux"),
            dev_dir: dir.path().join("dev"),
        };
        // The class entries exist but no /dev node answers: nothing listed.
        assert!(real.nodes().is_empty());
        let missing = SysfsVideoNodes {
            class_dir: dir.path().join("nope"),
            dev_dir: dir.path().join("dev"),
        };
        assert!(missing.nodes().is_empty());
    }
}
