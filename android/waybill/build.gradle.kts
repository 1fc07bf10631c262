import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.android.library)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "org.waybill"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets {
        getByName("main") {
            // src/main/kotlin: the platform-independent layer (also compiled and tested on
            // the JVM by scripts/kotlin-test.sh) and, once build-rust.sh has run, the
            // generated bindings under uniffi/. src/android/kotlin: what needs android.*.
            kotlin.srcDirs("src/main/kotlin", "src/android/kotlin")
            // src/main/jniLibs/<abi>/libwaybill_ffi.so, copied there by build-rust.sh.
            jniLibs.srcDirs("src/main/jniLibs")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    // The generated bindings call the native library through JNA; the AAR carries
    // libjnidispatch.so for every Android ABI.
    implementation("net.java.dev.jna:jna:${libs.versions.jna.get()}@aar")
    // Flow and StateFlow appear in the public API, so coroutines are an api dependency.
    api(libs.kotlinx.coroutines.android)
}
