//! What a fault proxy's connections consult for every request, whichever mode serves them: the
//! fault set on command, the provider noise and its counters.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::noise::{Counters, Noise, NoiseState, Verdict};

/// How the proxy treats traffic. In HTTP mode any fault but `Pass` overrides the noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Hold every chunk of the answer this long (HTTP mode: every answer).
    Delay(Duration),
    /// Answer every request with HTTP 500 and a JSON-RPC error body.
    Error,
    /// Close every connection at once.
    Refuse,
}

impl Fault {
    /// Parses `pass`, `error`, `refuse` or `delay/MILLISECONDS`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pass" => Some(Fault::Pass),
            "error" => Some(Fault::Error),
            "refuse" => Some(Fault::Refuse),
            other => {
                let ms = other.strip_prefix("delay/")?.parse().ok()?;
                Some(Fault::Delay(Duration::from_millis(ms)))
            }
        }
    }
}

pub(crate) const ERROR_BODY: &str =
    r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"injected fault"}}"#;

/// What a proxy's connections consult for every request: the fault, the noise and its counters.
pub(crate) struct Control {
    fault: Mutex<Fault>,
    noise: Mutex<NoiseState>,
    pub(crate) counters: Counters,
}

impl Control {
    pub(crate) fn new(noise: Noise) -> Self {
        Self {
            fault: Mutex::new(Fault::Pass),
            noise: Mutex::new(NoiseState::new(noise, rand::random(), Instant::now())),
            counters: Counters::default(),
        }
    }

    pub(crate) fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    pub(crate) fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, NoiseState> {
        self.noise.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The noise's verdict for a request arriving at `now` that calls `methods`, and the
    /// replica lag in force.
    pub(crate) fn draw(&self, now: Instant, methods: &[String]) -> (Verdict, u64) {
        let mut state = self.state();
        (state.draw(now, methods), state.noise().replica_lag)
    }

    pub(crate) fn replica_lag(&self) -> u64 {
        self.state().noise().replica_lag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!(Fault::parse("pass"), Some(Fault::Pass));
        assert_eq!(
            Fault::parse("delay/250"),
            Some(Fault::Delay(Duration::from_millis(250)))
        );
        assert_eq!(Fault::parse("error"), Some(Fault::Error));
        assert_eq!(Fault::parse("delay/x"), None);
        assert_eq!(Fault::parse("slow"), None);
    }
}
