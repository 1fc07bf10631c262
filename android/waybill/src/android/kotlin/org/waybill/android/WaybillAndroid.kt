package org.waybill.android

import android.content.Context
import org.waybill.Waybill
import java.io.File

/**
 * Opens the app's Waybill replica in [Context.getNoBackupFilesDir]. A store belongs to
 * one device (its identity, outbox and sync cursor): restored from a backup onto
 * another phone it would make two devices write as one, so it stays out of backups.
 * Keep the credential (a bearer token) out of backups too, e.g. in EncryptedFile.
 */
suspend fun Waybill.Companion.open(
    context: Context,
    credentialJson: String,
    fileName: String = "waybill.db",
): Waybill = open(File(context.noBackupFilesDir, fileName).path, credentialJson)
