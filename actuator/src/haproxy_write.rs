//! What a desired weight becomes on HAProxy's admin socket: nothing when HAProxy already has it
//! or the change is within the deadband, `set weight … N`, or on backends with a static
//! algorithm (which only take 0 and 100%) `0` or `100%`.

/// What to write to HAProxy, if anything: `None` when `desired` is `None`, when HAProxy already
/// has it, or when a non-zero weight would move by less than `deadband`. Backends with a static
/// algorithm only take 0 and 100%: there any desired weight above 0 means "100%".
pub fn weight_to_write(
    desired: Option<u32>,
    current: Option<u32>,
    deadband: u32,
    static_algorithm: bool,
) -> Option<WeightCommand> {
    let desired = desired?;
    if static_algorithm {
        let on = desired > 0;
        return match current {
            Some(c) if (c > 0) == on => None,
            _ if on => Some(WeightCommand::FullPercent),
            _ => Some(WeightCommand::Absolute(0)),
        };
    }
    match current {
        Some(c) if c == desired => None,
        Some(c) if c > 0 && desired > 0 && c.abs_diff(desired) < deadband => None,
        _ => Some(WeightCommand::Absolute(desired)),
    }
}

/// A weight as written in `set weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightCommand {
    Absolute(u32),
    /// `100%`: the server's configured weight (static algorithms).
    FullPercent,
}

impl WeightCommand {
    /// The weight HAProxy has after the command, on a server configured at `full_weight`.
    pub fn weight(self, full_weight: u32) -> u32 {
        match self {
            WeightCommand::Absolute(w) => w,
            WeightCommand::FullPercent => full_weight,
        }
    }
}

impl std::fmt::Display for WeightCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightCommand::Absolute(w) => write!(f, "{w}"),
            WeightCommand::FullPercent => f.write_str("100%"),
        }
    }
}
