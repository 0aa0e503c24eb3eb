//! Where webhooks may go, as an operator configures it: the same settings for the gateway,
//! which checks an endpoint's URL when it is registered, and the notifier, which delivers.

use crate::destination::{AllowedNetworks, DestinationPolicy};
use clap::Args;

/// `WEBHOOK_ALLOWED_NETWORKS` and `WEBHOOK_HTTPS_ONLY`.
#[derive(Debug, Clone, Default, Args)]
pub struct WebhookDestinations {
    /// Networks webhooks may go to although they are not public (comma-separated:
    /// `10.20.0.0/16, fd00:1::/64`; an address alone is a network of one). Empty: public
    /// addresses only.
    #[arg(long, env = "WEBHOOK_ALLOWED_NETWORKS", default_value = "")]
    pub webhook_allowed_networks: AllowedNetworks,

    /// Refuse webhook URLs that are plain `http`.
    #[arg(
        long,
        env = "WEBHOOK_HTTPS_ONLY",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_https_only: bool,
}

impl WebhookDestinations {
    /// The policy these settings make.
    pub fn policy(&self) -> DestinationPolicy {
        DestinationPolicy {
            allowed_networks: self.webhook_allowed_networks.clone(),
            https_only: self.webhook_https_only,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Settings {
        #[command(flatten)]
        destinations: WebhookDestinations,
    }

    #[test]
    fn settings_read_from_flags_and_a_bad_network_is_named() {
        let settings = Settings::try_parse_from([
            "test",
            "--webhook-allowed-networks",
            "127.0.0.0/8, ::1",
            "--webhook-https-only",
            "yes",
        ])
        .unwrap();
        let policy = settings.destinations.policy();
        assert!(policy.https_only);
        assert!(policy.check_ip("::1", "::1".parse().unwrap()).is_ok());
        let defaults = Settings::try_parse_from(["test"])
            .unwrap()
            .destinations
            .policy();
        assert_eq!(defaults, DestinationPolicy::default());
        let error = Settings::try_parse_from(["test", "--webhook-allowed-networks", "lan"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("`lan` is not a network"), "{error}");
    }
}
