//! The `users` table.

use sea_orm::entity::prelude::*;

/// One account.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// A UUID: ids that reveal nothing about how many accounts exist.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Normalized (trimmed, lower-case) and unique.
    #[sea_orm(unique)]
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Admins may read every user's files.
    pub admin: bool,
    /// When the account was created.
    pub created_at: ChronoDateTimeUtc,
}

/// No relations: accounts stand alone in this database.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
