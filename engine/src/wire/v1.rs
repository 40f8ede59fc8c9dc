//! `roomgate/1`: the client frames of the first protocol version, still
//! accepted from apps that offer only that ALPN. They differ from
//! `roomgate/2` in two places: a lead has no `consent_version`, and there
//! is no `Withdraw` frame. Decoded frames are converted to the current
//! types ([`ClientFrame`]), so nothing past the decoder knows the
//! version. Server frames did not change layout (a `Withdraw` ack is a
//! new `AckKind` value, which a `roomgate/1` client never causes).

use rkyv::{Archive, Deserialize, Serialize};

use super::{ClientFrame, Hello, Lead};

/// A `roomgate/1` client frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ClientFrameV1 {
    /// As [`ClientFrame::Hello`].
    Hello(Hello),
    /// As [`ClientFrame::Chat`].
    Chat {
        /// Client id.
        client_msg_id: u64,
        /// Text.
        text: String,
    },
    /// As [`ClientFrame::Like`].
    Like {
        /// Taps.
        count: u32,
    },
    /// As [`ClientFrame::Lead`], without the consent version.
    Lead(LeadV1),
    /// As [`ClientFrame::Bye`].
    Bye,
    /// As [`ClientFrame::Refresh`].
    Refresh {
        /// The new ticket.
        ticket: String,
    },
}

/// A `roomgate/1` lead: [`Lead`] without `consent_version`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct LeadV1 {
    /// As [`Lead::client_lead_id`].
    pub client_lead_id: u64,
    /// As [`Lead::phone`].
    pub phone: String,
    /// As [`Lead::wechat`].
    pub wechat: String,
    /// As [`Lead::name`].
    pub name: String,
    /// As [`Lead::fields`].
    pub fields: Vec<(String, String)>,
    /// As [`Lead::consent`].
    pub consent: bool,
    /// As [`Lead::honeypot`].
    pub honeypot: String,
    /// As [`Lead::fill_ms`].
    pub fill_ms: u32,
}

impl From<ClientFrameV1> for ClientFrame {
    fn from(f: ClientFrameV1) -> Self {
        match f {
            ClientFrameV1::Hello(h) => ClientFrame::Hello(h),
            ClientFrameV1::Chat {
                client_msg_id,
                text,
            } => ClientFrame::Chat {
                client_msg_id,
                text,
            },
            ClientFrameV1::Like { count } => ClientFrame::Like { count },
            ClientFrameV1::Lead(l) => ClientFrame::Lead(Lead {
                client_lead_id: l.client_lead_id,
                phone: l.phone,
                wechat: l.wechat,
                name: l.name,
                fields: l.fields,
                consent: l.consent,
                consent_version: String::new(),
                honeypot: l.honeypot,
                fill_ms: l.fill_ms,
            }),
            ClientFrameV1::Bye => ClientFrame::Bye,
            ClientFrameV1::Refresh { ticket } => ClientFrame::Refresh { ticket },
        }
    }
}
