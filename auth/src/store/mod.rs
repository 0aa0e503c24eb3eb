//! Accounts in SQL through sea-orm: the entity, its migrations, and the few queries the service
//! needs. The same code serves MySQL/MariaDB and the embedded SQLite default.

pub mod migration;
pub mod user;

use crate::error::AuthError;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, Database, DatabaseConnection, EntityTrait,
    QueryFilter, SqlErr,
};
use sea_orm_migration::MigratorTrait;
use service_kit::Secret;

pub use user::Model as User;

/// The accounts table.
#[derive(Debug, Clone)]
pub struct UserStore {
    db: DatabaseConnection,
}

impl UserStore {
    /// Connects to `url` (MySQL or SQLite).
    pub async fn connect(url: &Secret, max_connections: u32) -> Result<Self, AuthError> {
        let mut options = ConnectOptions::new(url.expose().to_owned());
        options
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        Ok(Self { db })
    }

    /// Applies pending migrations; a no-op when the schema is current.
    pub async fn migrate(&self) -> Result<(), AuthError> {
        migration::Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) -> Result<(), AuthError> {
        self.db.close().await?;
        Ok(())
    }

    /// Creates an account; [`AuthError::EmailTaken`] if the e-mail has one.
    pub async fn create(
        &self,
        email: &str,
        password_hash: String,
        admin: bool,
    ) -> Result<User, AuthError> {
        let user = new_user(email, password_hash, admin);
        match user::Entity::insert(user)
            .exec_with_returning(&self.db)
            .await
        {
            Ok(user) => Ok(user),
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                Err(AuthError::EmailTaken)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The account with this (normalized) e-mail, if any.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<User>, AuthError> {
        Ok(user::Entity::find()
            .filter(user::Column::Email.eq(email))
            .one(&self.db)
            .await?)
    }

    /// Creates an admin account, or makes an existing account an admin (its password is left
    /// alone). Safe to run on every start and from several replicas at once.
    pub async fn ensure_admin(
        &self,
        email: &str,
        password_hash: String,
    ) -> Result<User, AuthError> {
        let user = new_user(email, password_hash, true);
        user::Entity::insert(user)
            .on_conflict(
                OnConflict::column(user::Column::Email)
                    .update_column(user::Column::Admin)
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        self.find_by_email(email)
            .await?
            .ok_or_else(|| AuthError::Internal("admin account vanished after upsert"))
    }
}

/// A row for a new account with a fresh id.
fn new_user(email: &str, password_hash: String, admin: bool) -> user::ActiveModel {
    user::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        email: Set(email.to_owned()),
        password_hash: Set(password_hash),
        admin: Set(admin),
        created_at: Set(chrono::Utc::now()),
    }
}
