//! The soak's fault schedule, drawn up front from the seed: the same seed and length give
//! the same faults at the same offsets (the readings' timing still depends on the machine).
//!
//! Faults never overlap: each starts after the previous one ended plus a quiet gap, so the
//! gateway reconnects and sends in between. Long outages (the broker stopped for longer than
//! the queue takes to fill) are spread one per slot of [`OUTAGE_SLOT`]; short faults fill
//! the time around them. Everything has ended [`QUIET_END`] before the run's end. The first
//! outage spans the clock's jump, so that the jump meets a backlog stamped in 1970.

use std::time::Duration;

/// One long outage per this much of the run (at least one).
pub const OUTAGE_SLOT: Duration = Duration::from_secs(360);
/// No fault starts this close to the end.
pub const QUIET_END: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// SIGTERM to the broker, down for this long, started again.
    Restart(Duration),
    /// The same, for longer than the queue's `max_size` holds: the size policy must drop.
    Outage(Duration),
    /// The proxy closes every connection at once.
    Reset,
    /// The proxy swallows every byte, both ways, for this long (no FIN): a half-open link.
    HalfOpen(Duration),
}

impl Fault {
    /// How long the fault lasts (a reset is instant).
    pub fn length(&self) -> Duration {
        match *self {
            Fault::Restart(d) | Fault::Outage(d) | Fault::HalfOpen(d) => d,
            Fault::Reset => Duration::ZERO,
        }
    }
}

/// What the schedule is made of.
pub struct Shape {
    pub run: Duration,
    /// The gateway's keep-alive: a half-open period lasts a few of them.
    pub keep_alive: Duration,
    /// How long the broker must be down for the queue to reach `max_size`; outages last
    /// 1.5 to 2 times this (less if the run ends first).
    pub fill: Duration,
    /// When the clock jumps, if it does.
    pub jump: Option<Duration>,
}

/// Faults with their offsets from the start of the run, in order.
pub fn schedule(rng: &mut fastrand::Rng, shape: &Shape) -> Vec<(Duration, Fault)> {
    let secs = |lo: f64, hi: f64, rng: &mut fastrand::Rng| {
        Duration::from_secs_f64(lo + rng.f64() * (hi - lo))
    };
    let end = shape.run.saturating_sub(QUIET_END);
    let slots = (shape.run.as_secs_f64() / OUTAGE_SLOT.as_secs_f64())
        .ceil()
        .max(1.0) as u32;
    let slot = shape.run / slots;
    // Each outage starts somewhere in the first half of its slot (after the first 15 s); the
    // first one, when the clock jumps, a third of its length before the jump. An outage is
    // cut short by the end of the run, and left out if it could then not fill the queue.
    let mut outages: Vec<(Duration, Duration)> = (0..slots)
        .filter_map(|i| {
            let len = shape.fill.mul_f64(1.5 + rng.f64() * 0.5);
            let room = (slot / 2).saturating_sub(Duration::from_secs(15));
            let start = match shape.jump {
                Some(jump) if i == 0 => jump.saturating_sub(len / 3).max(Duration::from_secs(5)),
                _ => slot * i + Duration::from_secs(15) + room.mul_f64(rng.f64()),
            };
            let len = len.min(end.saturating_sub(start));
            (len > shape.fill.mul_f64(1.2)).then_some((start, len))
        })
        .collect();
    outages.reverse();
    let mut out = Vec::new();
    let mut t = Duration::from_secs(5);
    while t < end {
        if let Some(&(start, len)) = outages.last() {
            if t >= start {
                outages.pop();
                if t + len <= end {
                    out.push((t, Fault::Outage(len)));
                    t += len + secs(4.0, 8.0, rng);
                }
                continue;
            }
        }
        let fault = match rng.u32(0..3) {
            0 => Fault::Restart(secs(1.0, 4.0, rng)),
            1 => Fault::Reset,
            _ => Fault::HalfOpen(shape.keep_alive * 3 + secs(0.0, 2.0, rng)),
        };
        let over = t + fault.length();
        // A short fault must not run into the next outage or the end.
        let next = outages.last().map_or(end, |&(s, _)| s.min(end));
        if over < next {
            out.push((t, fault));
        }
        t = over + secs(4.0, 12.0, rng);
    }
    out
}
