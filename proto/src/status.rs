//! The lifecycle vocabulary of tasks and containers, as closed enums.
//!
//! On the wire (protobuf `string` fields), in the store and in the ECS JSON
//! these are ECS' own words (`RUNNING`, `EssentialContainerExited`, …); in
//! code they are these enums, so a typo is a compile error and a value from
//! outside is checked once, where it comes in ([`std::str::FromStr`] names
//! what it got). Every enum has `as_str` for the way back and `ALL` for
//! exhaustive tests and docs.

use std::fmt;
use std::str::FromStr;

/// A value that is not one of an enum's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what} (expected one of: {expected})")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! words {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word on the wire, in the store and in ECS' JSON.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        what: $what,
                        value: s.chars().take(64).collect(),
                        expected: [$($word),+].join(", "),
                    }),
                }
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.as_str()
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self.as_str() == other.as_str()
            }
        }
    };
}

words!(
    /// `lastStatus` of a task or a container, and a task's `desiredStatus`
    /// (RUNNING or STOPPED only).
    Status, "status", {
        Pending = "PENDING",
        Running = "RUNNING",
        Stopped = "STOPPED",
    }
);

words!(
    /// `healthStatus` of a task or a container.
    Health, "health status", {
        Healthy = "HEALTHY",
        Unhealthy = "UNHEALTHY",
        Unknown = "UNKNOWN",
    }
);

words!(
    /// `stopCode` of a stopped task (ECS' values that make sense off AWS).
    StopCode, "stop code", {
        /// The task never got all its essential containers running.
        TaskFailedToStart = "TaskFailedToStart",
        /// An essential container exited and was not restarted.
        EssentialContainerExited = "EssentialContainerExited",
        /// An operator stopped it (`berth task stop`, deregistration).
        UserInitiated = "UserInitiated",
        /// A service's scheduler stopped it (scale in, a deployment).
        ServiceSchedulerInitiated = "ServiceSchedulerInitiated",
    }
);

impl Status {
    /// Whether a task may be asked to be in this status (`desiredStatus`).
    pub const fn is_desirable(self) -> bool {
        matches!(self, Status::Running | Status::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_itself() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(*s));
        }
        for h in Health::ALL {
            assert_eq!(h.as_str().parse::<Health>(), Ok(*h));
        }
        for c in StopCode::ALL {
            assert_eq!(c.as_str().parse::<StopCode>(), Ok(*c));
        }
    }

    #[test]
    fn unknown_words_are_named_with_what_was_expected() {
        let e = "running"
            .parse::<Status>()
            .expect_err("case matters, as in ECS");
        assert_eq!(
            e.to_string(),
            r#""running" is not a valid status (expected one of: PENDING, RUNNING, STOPPED)"#
        );
        let long = "x".repeat(10_000);
        let e = long.parse::<StopCode>().expect_err("unknown");
        assert_eq!(e.value.len(), 64, "what is echoed back is bounded");
    }

    #[test]
    fn enums_compare_with_the_wire_strings() {
        assert!(Status::Running == "RUNNING");
        assert!(String::from("STOPPED") == Status::Stopped);
        assert!(!Status::Pending.is_desirable());
        assert_eq!(StopCode::UserInitiated.to_string(), "UserInitiated");
    }
}
