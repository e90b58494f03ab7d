// Included by .ci/upstream.sh (with `#[path]`) into a temporary copy of
// actix-session 0.11.0's src/lib.rs, so that its own, unchanged
// `test_helpers::acceptance_test_suite` (compiled only under `cfg(test)`,
// inside the crate) runs against sessionlog's `ActixStore`.
//
// sessionlog implements the registry's actix-session; the crate under test
// here is a second compilation of the same source, with its own copy of the
// `SessionStore` trait. `Bridge` forwards that trait to sessionlog's
// implementation, converting the session key (through its text) and the
// error variants one to one; it decides nothing.

use actix_web::cookie::time::Duration;
use sessionlog_upstream_harness::actix::Store;
use sessionlog_upstream_harness::actix::reg;

use crate::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};

struct Bridge(Store);

type State = std::collections::HashMap<String, String>;

fn to_reg(key: &SessionKey) -> reg::SessionKey {
    reg::SessionKey::try_from(key.as_ref().to_owned()).expect("a valid session key stays valid")
}

fn from_reg(key: reg::SessionKey) -> SessionKey {
    SessionKey::try_from(String::from(key)).expect("a valid session key stays valid")
}

impl SessionStore for Bridge {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        reg::SessionStore::load(&self.0, &to_reg(key))
            .await
            .map_err(|e| match e {
                reg::LoadError::Deserialization(e) => LoadError::Deserialization(e),
                reg::LoadError::Other(e) => LoadError::Other(e),
            })
    }

    async fn save(&self, state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        reg::SessionStore::save(&self.0, state, ttl)
            .await
            .map(from_reg)
            .map_err(|e| match e {
                reg::SaveError::Serialization(e) => SaveError::Serialization(e),
                reg::SaveError::Other(e) => SaveError::Other(e),
            })
    }

    async fn update(
        &self,
        key: SessionKey,
        state: State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        reg::SessionStore::update(&self.0, to_reg(&key), state, ttl)
            .await
            .map(from_reg)
            .map_err(|e| match e {
                reg::UpdateError::Serialization(e) => UpdateError::Serialization(e),
                reg::UpdateError::Other(e) => UpdateError::Other(e),
            })
    }

    async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        reg::SessionStore::update_ttl(&self.0, &to_reg(key), ttl).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        reg::SessionStore::delete(&self.0, &to_reg(key)).await
    }
}

#[actix_web::test]
async fn sessionlog_acceptance_test_suite() {
    // `true`: the adapter remembers an invalidated (deleted) session.
    crate::test_helpers::acceptance_test_suite(|| Bridge(Store::fresh()), true).await;
}
