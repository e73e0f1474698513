//! `PATCH /me`: the name and phone a user may change themselves.

use super::UserState;

/// A `PATCH /me` change: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ProfilePatch {
    pub full_name: Option<Option<String>>,
    pub phone: Option<Option<String>>,
}

impl UserState {
    /// Applies a profile change; a new phone number is unverified and voids a pending code.
    pub fn patch_profile(&mut self, patch: ProfilePatch) {
        if let Some(name) = patch.full_name {
            self.full_name = name;
        }
        if let Some(phone) = patch.phone {
            if phone != self.phone {
                self.phone = phone;
                self.phone_verified = false;
                self.phone_code.void();
            }
        }
    }
}
