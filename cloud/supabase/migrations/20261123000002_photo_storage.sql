-- Evidence photos in Supabase Storage, bucket `attendance-photos`, private.
-- Each kiosk writes under its own folder: `<device_id>/<school_date>/<record id>.jpg`.
-- Skipped where the `storage` schema does not exist (plain PostgreSQL).

BEGIN;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'storage') THEN
        RAISE NOTICE 'no storage schema: skipping the photo bucket';
        RETURN;
    END IF;
    INSERT INTO storage.buckets (id, name, public)
        VALUES ('attendance-photos', 'attendance-photos', false)
        ON CONFLICT (id) DO NOTHING;
    GRANT USAGE ON SCHEMA storage TO kiosk_device;
    GRANT SELECT, INSERT, UPDATE ON storage.objects TO kiosk_device;
    DROP POLICY IF EXISTS kiosk_photo_insert ON storage.objects;
    DROP POLICY IF EXISTS kiosk_photo_select ON storage.objects;
    DROP POLICY IF EXISTS kiosk_photo_update ON storage.objects;
    -- `x-upsert: true` needs select and update on the kiosk's own objects too.
    CREATE POLICY kiosk_photo_insert ON storage.objects FOR INSERT TO kiosk_device
        WITH CHECK (bucket_id = 'attendance-photos'
                    AND split_part(name, '/', 1) = kiosk.jwt_device_id()
                    AND kiosk.device_school() IS NOT NULL);
    CREATE POLICY kiosk_photo_select ON storage.objects FOR SELECT TO kiosk_device
        USING (bucket_id = 'attendance-photos' AND split_part(name, '/', 1) = kiosk.jwt_device_id());
    CREATE POLICY kiosk_photo_update ON storage.objects FOR UPDATE TO kiosk_device
        USING (bucket_id = 'attendance-photos' AND split_part(name, '/', 1) = kiosk.jwt_device_id())
        WITH CHECK (bucket_id = 'attendance-photos' AND split_part(name, '/', 1) = kiosk.jwt_device_id());
END
$$;
COMMIT;
