//! The network-driver check (run by `/bin/drvinit` with `k42.arg=1`, on a VM with a virtio-net
//! card on a host TAP device that has 10.0.2.1): through `net0` (`netd`) it sends ARP
//! requests from 10.0.2.15 for 10.0.2.1 until a reply comes (for up to 30 s: the host sets its
//! side up after the VM starts), and prints the reply's MAC address for the host to compare
//! with its TAP device's; frames of bad lengths and unknown operations must be refused.
#![no_std]
#![no_main]

use k42_guest_lib::virtio::net::{op, NetError};
use k42_programs::devmem::own_ppc_buffer;
use k42_rt::{println, sys};

k42_rt::entry!(main);

/// The guest's address and the host's, on the TAP link.
const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
const HOST_IP: [u8; 4] = [10, 0, 2, 1];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

/// One call to the network server: `Ok(r1)` or the driver's error.
fn call(server: u64, operation: u64, a1: u64) -> Result<u64, NetError> {
    match sys::ppc_call(server, [operation, a1, 0, 0]) {
        Ok((0, r1)) => Ok(r1),
        Ok((code, _)) => Err(NetError::from_code(code).unwrap_or(NetError::Device)),
        Err(_) => Err(NetError::NoServer),
    }
}

/// An ARP request (RFC 826) from `mac`/GUEST_IP for HOST_IP, broadcast.
fn arp_request(mac: [u8; 6]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP);
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&GUEST_IP);
    f[38..42].copy_from_slice(&HOST_IP);
    f
}

/// The sender's MAC address if `frame` is an ARP reply from HOST_IP to GUEST_IP.
fn arp_reply_from_host(frame: &[u8]) -> Option<[u8; 6]> {
    let is_reply = frame.len() >= 42
        && frame[12..14] == ETHERTYPE_ARP
        && frame[20..22] == [0, 2]
        && frame[28..32] == HOST_IP
        && frame[38..42] == GUEST_IP;
    is_reply.then(|| frame[22..28].try_into().unwrap_or([0; 6]))
}

fn main(_arg: u64) -> i64 {
    let server = match k42_rt::lookup_retrying("net0") {
        Ok(server) => server,
        Err(e) => {
            println!("nettest: no net0 server: {e:?}");
            return 1;
        }
    };
    let mac = match call(server, op::MAC, 0) {
        Ok(word) => {
            let b = word.to_be_bytes();
            [b[2], b[3], b[4], b[5], b[6], b[7]]
        }
        Err(e) => {
            println!("nettest: mac: {e:?}");
            return 1;
        }
    };
    let mut ok = true;
    // Frames the driver must refuse: shorter than an Ethernet header, longer than the MTU.
    for len in [5, 1515, 1 << 40] {
        let got = call(server, op::SEND, len);
        if got != Err(NetError::BadFrame) {
            println!("nettest: FAILED: a frame of {len} bytes gave {got:?}, not BadFrame");
            ok = false;
        }
    }
    if call(server, 99, 0) != Err(NetError::UnknownOp) {
        println!("nettest: FAILED: operation 99 was not refused");
        ok = false;
    }
    let request = arp_request(mac);
    let end = sys::now_ns() + 30_000_000_000;
    let mut requests = 0;
    let mut others = 0;
    let host_mac = 'asking: loop {
        if sys::now_ns() > end {
            println!("nettest: FAILED: no ARP reply from 10.0.2.1 in 30 s ({requests} requests)");
            return 1;
        }
        own_ppc_buffer()[..request.len()].copy_from_slice(&request);
        if let Err(e) = call(server, op::SEND, request.len() as u64) {
            println!("nettest: FAILED: send: {e:?}");
            return 1;
        }
        requests += 1;
        // Frames until half a second has passed, then ask again.
        let ask_again = sys::now_ns() + 500_000_000;
        loop {
            match call(server, op::RECEIVE, ask_again) {
                Ok(0) => continue 'asking,
                Ok(len) => {
                    let frame = &own_ppc_buffer()[..len as usize];
                    match arp_reply_from_host(frame) {
                        Some(mac) => break 'asking mac,
                        None => others += 1,
                    }
                }
                Err(e) => {
                    println!("nettest: FAILED: receive: {e:?}");
                    return 1;
                }
            }
        }
    };
    let m = host_mac;
    println!(
        "nettest: ARP reply: 10.0.2.1 is at {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} \
         (after {requests} requests, {others} other frames)",
        m[0], m[1], m[2], m[3], m[4], m[5]
    );
    // The card object's counts (the sum of its reps') match what this test moved.
    let stats = call(server, op::STATS, 0);
    println!("nettest: net0 stats {stats:?}: sent << 32 | received");
    if stats != Ok((requests << 32) | (others + 1)) {
        println!(
            "nettest: FAILED: the driver counted other than {requests} sent, {} received",
            others + 1
        );
        ok = false;
    }
    // The host reads its neighbour table while the VM still runs (the TAP device goes with
    // k42vm): give it time to.
    sys::block(sys::now_ns() + 2_000_000_000);
    if ok {
        println!("nettest: all checks passed");
        0
    } else {
        1
    }
}
