//! Routing by what providers can carry, after health has been judged: which tiers are in use,
//! and weights capped so that no server is sent more than its plan allows.
//!
//! - **Tiers**: tier N alone serves while its available servers (admitted by the policy and UP in
//!   HAProxy) can carry `min_tier_capacity` times the backend's request rate (a server without a
//!   limit carries anything); else the next tier comes in. Servers of tiers not in use stand by
//!   at weight 0. A tier once in use is released only when the lower ones cover the demand with
//!   [`RELEASE_MARGIN`] to spare, so demand near a tier's capacity does not flip it every cycle,
//!   and by servers done with slow start, so returning servers are not handed all the traffic.
//!   A release that fails (the tier is needed again within [`FAILED_RELEASE_WITHIN`]) holds the
//!   next one back, longer after each failure ([`ReleaseBackoff`]), so an incident changes tiers
//!   once, not every time the lower tiers look ready again.
//!   With no server available anywhere nothing stands by: tiers never empty a backend.
//! - **Plan limits**: with the demand `D` known, a server's expected rate is `D × w / Σw`. Shares
//!   are water-filled: a server whose share would exceed its limit (times [`PLAN_HEADROOM`]) is
//!   fixed at the limit, and the rest is shared by the others in proportion to their weights.
//!   When even the limits of every server in use cannot carry `D`, traffic is shared by limit
//!   and the backend is overloaded.

use common::config::{PolicyConfig, Tier};

/// Share of a plan's limit the actuator aims at: the demand it measures is an average, and the
/// provider's limiter counts bursts.
pub const PLAN_HEADROOM: f64 = 0.9;

/// A tier in use is released only when the lower tiers cover the demand this many times over.
pub const RELEASE_MARGIN: f64 = 1.25;

/// A release that ended with the tier brought back in sooner than this (seconds) failed: the
/// lower tiers did not carry the demand after all.
pub const FAILED_RELEASE_WITHIN: f64 = 300.0;
/// The hold on releasing again after a first failed release (seconds); each further failure in a
/// row doubles it, up to [`MAX_RELEASE_BACKOFF`].
pub const RELEASE_BACKOFF: f64 = 60.0;
pub const MAX_RELEASE_BACKOFF: f64 = 1800.0;

/// What a reserve server remembers of its tier's releases.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReleaseBackoff {
    /// It served last cycle: a tier in use, a weight above 0. Only serving → standby is a
    /// release (not a start, nor a readmission straight into standby).
    pub serving: bool,
    /// When its tier was last released (policy clock); `None` once it served again or the
    /// release held for [`FAILED_RELEASE_WITHIN`].
    pub released_at: Option<f64>,
    /// Failed releases in a row.
    pub failures: u32,
    /// Its tier is not released before this (policy clock).
    pub held_until: f64,
}

impl ReleaseBackoff {
    /// After a cycle in which the server stands by (`standby`) or serves (`serving`).
    pub fn next(self, standby: bool, serving: bool, now: f64) -> Self {
        let next = match self.released_at {
            _ if self.serving && standby => Self {
                released_at: Some(now),
                ..self
            },
            Some(at) if now - at < FAILED_RELEASE_WITHIN => {
                if !serving {
                    return Self { serving, ..self };
                }
                let failures = self.failures.saturating_add(1);
                let doublings = failures.saturating_sub(1).min(16) as i32;
                let hold = (RELEASE_BACKOFF * 2f64.powi(doublings)).min(MAX_RELEASE_BACKOFF);
                Self {
                    released_at: None,
                    failures,
                    held_until: now + hold,
                    ..self
                }
            }
            // The release held: the count restarts.
            Some(_) => Self {
                released_at: None,
                failures: 0,
                ..self
            },
            None => self,
        };
        Self { serving, ..next }
    }

    /// Seconds its tier's release is still held at `now`; `None`: not held.
    pub fn held_for(&self, now: f64) -> Option<f64> {
        (self.held_until > now).then_some(self.held_until - now)
    }
}

/// One server as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    pub tier: Tier,
    /// Requests per second it can carry; `None`: unlimited.
    pub limit: Option<f64>,
    /// Admitted by the policy and UP in HAProxy: it can carry traffic now.
    pub available: bool,
    /// In slow start: it does not count toward releasing a higher tier yet.
    pub ramping: bool,
    /// The weight the policy wants; `None`: leave HAProxy's (no data), which routing keeps.
    pub desired: Option<u32>,
}

/// What routing decided for a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// The highest tier in use; `None` when no server is available.
    pub tier: Option<Tier>,
    /// Per slot: standing by (a tier not in use), its weight set to 0.
    pub standby: Vec<bool>,
    /// Per slot: the weight after tiers and limits.
    pub desired: Vec<Option<u32>>,
    /// What the available servers of the tiers in use can carry; `None`: unlimited.
    pub capacity: Option<f64>,
    /// The demand exceeds `capacity`: traffic is shared by limit.
    pub overloaded: bool,
}

/// Chooses the tiers in use and caps weights; `demand` in requests per second (`None`: not
/// measured yet, then only health chooses the tier), `previous` the highest tier in use last
/// cycle, `release_held`: a failed release holds the tiers in use (see [`ReleaseBackoff`]).
pub fn route(
    policy: &PolicyConfig,
    slots: &[Slot],
    demand: Option<f64>,
    previous: Option<Tier>,
    release_held: bool,
) -> Routing {
    let need = demand.unwrap_or(0.0) * policy.min_tier_capacity;
    // What the available servers of tiers up to `t` carry (only those done with slow start, for
    // a release); `None` when none is available.
    let capacity_of = |t: Tier, settled: bool| -> Option<f64> {
        let mut pool = slots
            .iter()
            .filter(|s| s.available && s.tier <= t && !(settled && s.ramping));
        let first = pool.next()?;
        // What capping will aim at, so that a tier chosen as enough is not then overloaded.
        let carries = |s: &Slot| s.limit.map_or(f64::INFINITY, |l| l * PLAN_HEADROOM);
        Some(pool.fold(carries(first), |sum, s| sum + carries(s)))
    };
    let mut tiers: Vec<Tier> = slots.iter().map(|s| s.tier).collect();
    tiers.sort_unstable();
    tiers.dedup();
    let capacity_up_to = |t: Tier| capacity_of(t, false);
    let covers = |t: Tier| capacity_up_to(t).is_some_and(|c| c >= need);
    // Without a measured demand (a first cycle, counters reset by a reload) only servers that
    // carry anything release a higher tier: one kept for capacity stays until the demand is known.
    let releases = |t: Tier| {
        let need = demand.map_or(f64::INFINITY, |_| need * RELEASE_MARGIN);
        capacity_of(t, true).is_some_and(|c| c >= need)
    };
    let any_available = slots.iter().any(|s| s.available);
    let tier = if any_available {
        let enough = tiers.iter().copied().find(|t| covers(*t));
        let chosen = enough.or(tiers.last().copied());
        match (chosen, previous) {
            // Keep a higher tier until the lower ones cover the demand with room to spare.
            (Some(c), Some(p)) if p > c && tiers.contains(&p) && (release_held || !releases(c)) => {
                Some(p)
            }
            _ => chosen,
        }
    } else {
        None
    };
    let in_use = |s: &Slot| tier.is_none_or(|t| s.tier <= t);
    // Only a server that could carry traffic stands by; an ejected one stays ejected.
    let standby: Vec<bool> = slots.iter().map(|s| !in_use(s) && s.available).collect();
    let mut desired: Vec<Option<u32>> = slots
        .iter()
        .zip(&standby)
        .map(|(s, standby)| if *standby { Some(0) } else { s.desired })
        .collect();
    let capacity = tier
        .and_then(capacity_up_to)
        .filter(|c| c.is_finite())
        .map(|c| c / PLAN_HEADROOM);
    let overloaded = match demand {
        Some(d) if d > 0.0 && tier.is_some() => cap(policy, slots, &mut desired, d),
        _ => false,
    };
    Routing {
        tier,
        standby,
        desired,
        capacity,
        overloaded,
    }
}

/// Water-fills the carrying servers' shares of `demand` under their limits and rewrites their
/// weights; returns whether the limits cannot carry the demand.
fn cap(policy: &PolicyConfig, slots: &[Slot], desired: &mut [Option<u32>], demand: f64) -> bool {
    let carrying: Vec<usize> = (0..slots.len())
        .filter(|i| slots[*i].available && desired[*i].is_some_and(|w| w > 0))
        .collect();
    if carrying.iter().all(|i| slots[*i].limit.is_none()) {
        return false;
    }
    let weight = |i: usize| f64::from(desired[i].unwrap_or(0));
    let limit = |i: usize| slots[i].limit.map(|l| l * PLAN_HEADROOM);
    let mut fixed: Vec<Option<f64>> = vec![None; slots.len()];
    loop {
        let free: Vec<usize> = carrying
            .iter()
            .copied()
            .filter(|i| fixed[*i].is_none())
            .collect();
        let free_weight: f64 = free.iter().map(|i| weight(*i)).sum();
        let free_share = 1.0 - fixed.iter().flatten().sum::<f64>();
        let over: Vec<usize> = free
            .iter()
            .copied()
            .filter(|i| {
                limit(*i).is_some_and(|l| free_share * weight(*i) / free_weight * demand > l)
            })
            .collect();
        if over.is_empty() || free_weight <= 0.0 {
            break;
        }
        for i in over {
            fixed[i] = limit(i).map(|l| l / demand);
        }
    }
    let all_fixed = carrying.iter().all(|i| fixed[*i].is_some());
    let shares: Vec<(usize, f64)> = if all_fixed {
        // Even at their limits they cannot carry the demand: share it by limit.
        let total: f64 = carrying.iter().filter_map(|i| limit(*i)).sum();
        carrying
            .iter()
            .map(|i| (*i, limit(*i).unwrap_or(0.0) / total))
            .collect()
    } else {
        let free_weight: f64 = carrying
            .iter()
            .filter(|i| fixed[**i].is_none())
            .map(|i| weight(*i))
            .sum();
        let free_share = 1.0 - fixed.iter().flatten().sum::<f64>();
        carrying
            .iter()
            .map(|i| {
                let share = fixed[*i].unwrap_or(free_share * weight(*i) / free_weight);
                (*i, share)
            })
            .collect()
    };
    // Back to weights, the largest share keeping the largest weight wanted (so slow start and
    // latency weighting keep their scale).
    let top_share = shares.iter().map(|(_, s)| *s).fold(0.0, f64::max);
    let top_weight = carrying.iter().map(|i| weight(*i)).fold(0.0, f64::max);
    if top_share > 0.0 {
        for (i, share) in shares {
            let w = (share / top_share * top_weight).round();
            desired[i] = Some((w as u32).clamp(1, policy.full_weight.max(1)));
        }
    }
    all_fixed
}

/// The expected request rate of each slot, for tests and reports: `demand × w / Σw` over the
/// available servers.
pub fn expected_rates(slots: &[Slot], desired: &[Option<u32>], demand: f64) -> Vec<f64> {
    let carried = |i: usize| {
        if slots[i].available {
            f64::from(desired[i].unwrap_or(0))
        } else {
            0.0
        }
    };
    let total: f64 = (0..slots.len()).map(carried).sum();
    (0..slots.len())
        .map(|i| {
            if total > 0.0 {
                demand * carried(i) / total
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(t: u8) -> Tier {
        Tier::new(t).unwrap()
    }

    fn slot(t: u8, limit: Option<f64>, available: bool) -> Slot {
        Slot {
            tier: tier(t),
            limit,
            available,
            ramping: false,
            desired: Some(if available { 100 } else { 0 }),
        }
    }

    #[test]
    fn the_reserve_stays_until_the_returning_primaries_are_done_with_slow_start() {
        let p = PolicyConfig::default();
        let mut slots = [
            slot(1, None, true),
            slot(1, None, true),
            slot(2, None, true),
        ];
        slots[0].ramping = true;
        slots[1].ramping = true;
        let r = route(&p, &slots, Some(10.0), Some(tier(2)), false);
        assert_eq!(
            r.tier,
            Some(tier(2)),
            "still ramping: the reserve serves too"
        );
        slots[0].ramping = false;
        assert_eq!(
            route(&p, &slots, Some(10.0), Some(tier(2)), false).tier,
            Some(tier(1))
        );
        // Coming up from nothing, tier 1 serves at once, ramping or not.
        slots[0].ramping = true;
        assert_eq!(
            route(&p, &slots, Some(10.0), None, false).tier,
            Some(tier(1))
        );
    }

    #[test]
    fn a_reserve_stands_by_while_the_primaries_are_healthy() {
        let p = PolicyConfig::default();
        let slots = [
            slot(1, None, true),
            slot(1, None, true),
            slot(2, None, true),
        ];
        let r = route(&p, &slots, Some(100.0), None, false);
        assert_eq!(r.tier, Some(tier(1)));
        assert_eq!(r.standby, [false, false, true]);
        assert_eq!(r.desired, [Some(100), Some(100), Some(0)]);
    }

    #[test]
    fn the_reserve_comes_in_when_no_primary_is_available() {
        let p = PolicyConfig::default();
        let slots = [
            slot(1, None, false),
            slot(1, None, false),
            slot(2, None, true),
        ];
        let r = route(&p, &slots, None, Some(tier(1)), false);
        assert_eq!(r.tier, Some(tier(2)));
        assert_eq!(r.desired, [Some(0), Some(0), Some(100)]);
    }

    #[test]
    fn demand_above_the_primaries_plan_brings_the_reserve_in_and_it_leaves_with_margin() {
        let p = PolicyConfig::default();
        let slots = [
            slot(1, Some(30.0), true),
            slot(1, Some(30.0), true),
            slot(2, None, true),
        ];
        // Tier 1 carries 90 % of its 60 req/s of plans: 54.
        assert_eq!(
            route(&p, &slots, Some(50.0), None, false).tier,
            Some(tier(1))
        );
        assert_eq!(
            route(&p, &slots, Some(56.0), None, false).tier,
            Some(tier(2))
        );
        // Back to 50 req/s: 54 covers it, but not with a quarter to spare.
        assert_eq!(
            route(&p, &slots, Some(50.0), Some(tier(2)), false).tier,
            Some(tier(2))
        );
        assert_eq!(
            route(&p, &slots, Some(40.0), Some(tier(2)), false).tier,
            Some(tier(1))
        );
        // A reload resets HAProxy's counters: no demand, so the reserve stays.
        assert_eq!(
            route(&p, &slots, None, Some(tier(2)), false).tier,
            Some(tier(2))
        );
    }

    #[test]
    fn a_limited_server_is_capped_and_the_rest_goes_to_the_others() {
        let p = PolicyConfig::default();
        let slots = [
            slot(1, Some(15.0), true),
            slot(1, None, true),
            slot(1, None, true),
        ];
        let r = route(&p, &slots, Some(100.0), None, false);
        let rates = expected_rates(&slots, &r.desired, 100.0);
        assert!(rates[0] <= 15.0 * PLAN_HEADROOM + 0.5, "{rates:?}");
        assert!((rates[1] - rates[2]).abs() < 1.0, "{rates:?}");
        assert!(!r.overloaded);
    }

    #[test]
    fn demand_over_every_limit_is_shared_by_limit_and_said() {
        let p = PolicyConfig::default();
        let slots = [slot(1, Some(10.0), true), slot(1, Some(30.0), true)];
        let r = route(&p, &slots, Some(100.0), None, false);
        assert!(r.overloaded);
        assert_eq!(r.capacity, Some(40.0));
        let rates = expected_rates(&slots, &r.desired, 100.0);
        assert!((rates[1] / rates[0] - 3.0).abs() < 0.1, "{rates:?}");
    }

    #[test]
    fn no_available_server_means_nothing_stands_by() {
        let p = PolicyConfig::default();
        let slots = [slot(1, None, false), slot(2, None, false)];
        let r = route(&p, &slots, Some(10.0), Some(tier(1)), false);
        assert_eq!(r.tier, None);
        assert_eq!(r.standby, [false, false]);
    }

    #[test]
    fn an_ejected_reserve_is_not_standing_by() {
        let p = PolicyConfig::default();
        let r = route(
            &p,
            &[slot(1, None, true), slot(2, None, false)],
            None,
            None,
            false,
        );
        assert_eq!(r.standby, [false, false]);
        assert_eq!(r.desired, [Some(100), Some(0)]);
    }

    #[test]
    fn a_server_without_data_keeps_its_weight_even_in_a_tier_not_in_use() {
        let p = PolicyConfig::default();
        let mut reserve = slot(2, None, false);
        reserve.desired = None;
        let r = route(&p, &[slot(1, None, true), reserve], None, None, false);
        assert_eq!(r.desired, [Some(100), None]);
    }

    #[test]
    fn a_failed_release_holds_the_next_one_longer_each_time_and_a_lasting_one_resets() {
        // Standing by from the start (or straight after a readmission) is no release.
        let b = ReleaseBackoff::default().next(true, false, 0.0);
        assert_eq!(b.released_at, None);
        // Served, released at 100, needed again at 130: a failed release, held 60 s.
        let b = b.next(false, true, 90.0).next(true, false, 100.0);
        assert_eq!(b.released_at, Some(100.0));
        let b = b.next(true, false, 120.0).next(false, true, 130.0);
        assert_eq!((b.failures, b.held_for(130.0)), (1, Some(60.0)));
        assert_eq!(b.held_for(190.0), None);
        // Released again at 200 and needed at 210: held twice as long.
        let b = b.next(true, false, 200.0).next(false, true, 210.0);
        assert_eq!((b.failures, b.held_for(210.0)), (2, Some(120.0)));
        // A release that lasts FAILED_RELEASE_WITHIN held: the next need starts from nothing.
        let b = b.next(true, false, 400.0);
        let b = b.next(true, false, 400.0 + FAILED_RELEASE_WITHIN);
        assert_eq!((b.failures, b.released_at), (0, None));
        let b = b.next(false, true, 1000.0);
        assert_eq!((b.failures, b.held_for(1000.0)), (0, None));
        // Holds stop growing at MAX_RELEASE_BACKOFF.
        let mut b = ReleaseBackoff::default();
        for i in 0..12 {
            let t = f64::from(i) * 10.0;
            b = b
                .next(false, true, t)
                .next(true, false, t + 1.0)
                .next(false, true, t + 2.0);
        }
        assert_eq!(b.held_for(112.0), Some(MAX_RELEASE_BACKOFF));
    }

    #[test]
    fn a_held_release_keeps_the_higher_tier_in_use() {
        let p = PolicyConfig::default();
        let slots = [slot(1, None, true), slot(2, None, true)];
        assert_eq!(
            route(&p, &slots, Some(10.0), Some(tier(2)), false).tier,
            Some(tier(1))
        );
        let held = route(&p, &slots, Some(10.0), Some(tier(2)), true);
        assert_eq!(
            (held.tier, held.standby),
            (Some(tier(2)), vec![false, false])
        );
        // A hold never brings a tier in by itself.
        assert_eq!(
            route(&p, &slots, Some(10.0), Some(tier(1)), true).tier,
            Some(tier(1))
        );
    }
}
