//! Vocabulary the synthetic corpus is built from: diseases with the drugs that treat them,
//! non-drug interventions, outcomes, study designs, populations, journals and author names.
//!
//! Each disease lists the drugs usually studied for it, so a generated paper pairs them the way
//! real literature does and a search for "metformin diabetes" finds many papers.

/// A disease and the drugs typically studied for it.
#[derive(Debug)]
pub struct Disease {
    /// Name as it appears in titles and abstracts.
    pub name: &'static str,
    /// Drugs commonly trialled for this disease.
    pub drugs: &'static [&'static str],
    /// Outcomes commonly measured for this disease.
    pub outcomes: &'static [&'static str],
}

pub const DISEASES: &[Disease] = &[
    Disease {
        name: "type 2 diabetes",
        drugs: &[
            "metformin",
            "empagliflozin",
            "semaglutide",
            "sitagliptin",
            "insulin glargine",
            "dapagliflozin",
            "liraglutide",
        ],
        outcomes: &[
            "HbA1c",
            "fasting glucose",
            "body weight",
            "hypoglycaemia",
            "cardiovascular events",
        ],
    },
    Disease {
        name: "hypertension",
        drugs: &[
            "amlodipine",
            "lisinopril",
            "losartan",
            "hydrochlorothiazide",
            "chlorthalidone",
        ],
        outcomes: &[
            "systolic blood pressure",
            "stroke",
            "cardiovascular events",
            "renal function",
        ],
    },
    Disease {
        name: "heart failure",
        drugs: &[
            "sacubitril",
            "empagliflozin",
            "dapagliflozin",
            "spironolactone",
            "carvedilol",
            "furosemide",
        ],
        outcomes: &[
            "hospitalization",
            "all-cause mortality",
            "ejection fraction",
            "quality of life",
        ],
    },
    Disease {
        name: "atrial fibrillation",
        drugs: &[
            "apixaban",
            "rivaroxaban",
            "warfarin",
            "dabigatran",
            "amiodarone",
        ],
        outcomes: &[
            "stroke",
            "major bleeding",
            "all-cause mortality",
            "sinus rhythm",
        ],
    },
    Disease {
        name: "asthma",
        drugs: &[
            "budesonide",
            "salbutamol",
            "montelukast",
            "omalizumab",
            "fluticasone",
        ],
        outcomes: &[
            "exacerbations",
            "lung function",
            "symptom control",
            "quality of life",
        ],
    },
    Disease {
        name: "chronic obstructive pulmonary disease",
        drugs: &[
            "tiotropium",
            "budesonide",
            "roflumilast",
            "azithromycin",
            "salbutamol",
        ],
        outcomes: &[
            "exacerbations",
            "lung function",
            "hospitalization",
            "all-cause mortality",
        ],
    },
    Disease {
        name: "major depressive disorder",
        drugs: &[
            "sertraline",
            "escitalopram",
            "fluoxetine",
            "ketamine",
            "bupropion",
            "venlafaxine",
        ],
        outcomes: &[
            "depressive symptoms",
            "remission",
            "relapse",
            "quality of life",
        ],
    },
    Disease {
        name: "alzheimer disease",
        drugs: &[
            "donepezil",
            "memantine",
            "lecanemab",
            "aducanumab",
            "rivastigmine",
        ],
        outcomes: &[
            "cognitive decline",
            "amyloid burden",
            "functional status",
            "caregiver burden",
        ],
    },
    Disease {
        name: "rheumatoid arthritis",
        drugs: &[
            "methotrexate",
            "adalimumab",
            "tofacitinib",
            "etanercept",
            "hydroxychloroquine",
        ],
        outcomes: &[
            "disease activity",
            "radiographic progression",
            "remission",
            "serious infections",
        ],
    },
    Disease {
        name: "breast cancer",
        drugs: &[
            "tamoxifen",
            "trastuzumab",
            "letrozole",
            "pembrolizumab",
            "palbociclib",
        ],
        outcomes: &[
            "overall survival",
            "progression-free survival",
            "recurrence",
            "cardiotoxicity",
        ],
    },
    Disease {
        name: "non-small cell lung cancer",
        drugs: &[
            "pembrolizumab",
            "osimertinib",
            "nivolumab",
            "cisplatin",
            "atezolizumab",
        ],
        outcomes: &[
            "overall survival",
            "progression-free survival",
            "response rate",
            "adverse events",
        ],
    },
    Disease {
        name: "colorectal cancer",
        drugs: &[
            "oxaliplatin",
            "bevacizumab",
            "cetuximab",
            "capecitabine",
            "aspirin",
        ],
        outcomes: &[
            "overall survival",
            "recurrence",
            "progression-free survival",
            "neuropathy",
        ],
    },
    Disease {
        name: "chronic kidney disease",
        drugs: &[
            "dapagliflozin",
            "finerenone",
            "losartan",
            "empagliflozin",
            "sodium bicarbonate",
        ],
        outcomes: &[
            "renal function",
            "end-stage kidney disease",
            "albuminuria",
            "cardiovascular events",
        ],
    },
    Disease {
        name: "obesity",
        drugs: &[
            "semaglutide",
            "tirzepatide",
            "orlistat",
            "liraglutide",
            "phentermine",
        ],
        outcomes: &[
            "body weight",
            "waist circumference",
            "HbA1c",
            "quality of life",
        ],
    },
    Disease {
        name: "sepsis",
        drugs: &[
            "hydrocortisone",
            "vasopressin",
            "norepinephrine",
            "meropenem",
            "vitamin C",
        ],
        outcomes: &[
            "all-cause mortality",
            "organ failure",
            "length of stay",
            "shock reversal",
        ],
    },
    Disease {
        name: "covid-19",
        drugs: &[
            "dexamethasone",
            "remdesivir",
            "nirmatrelvir",
            "tocilizumab",
            "ivermectin",
        ],
        outcomes: &[
            "all-cause mortality",
            "hospitalization",
            "viral clearance",
            "mechanical ventilation",
        ],
    },
    Disease {
        name: "migraine",
        drugs: &[
            "erenumab",
            "sumatriptan",
            "topiramate",
            "propranolol",
            "botulinum toxin",
        ],
        outcomes: &[
            "migraine days",
            "pain freedom",
            "disability",
            "adverse events",
        ],
    },
    Disease {
        name: "osteoporosis",
        drugs: &[
            "alendronate",
            "denosumab",
            "zoledronic acid",
            "teriparatide",
            "vitamin D",
        ],
        outcomes: &[
            "hip fracture",
            "bone mineral density",
            "vertebral fracture",
            "falls",
        ],
    },
    Disease {
        name: "parkinson disease",
        drugs: &[
            "levodopa",
            "pramipexole",
            "rasagiline",
            "amantadine",
            "safinamide",
        ],
        outcomes: &[
            "motor symptoms",
            "dyskinesia",
            "quality of life",
            "cognitive decline",
        ],
    },
    Disease {
        name: "hiv infection",
        drugs: &[
            "dolutegravir",
            "tenofovir",
            "bictegravir",
            "cabotegravir",
            "efavirenz",
        ],
        outcomes: &[
            "viral suppression",
            "CD4 count",
            "drug resistance",
            "adverse events",
        ],
    },
];

/// Interventions that are not drugs.
pub const INTERVENTIONS: &[&str] = &[
    "aerobic exercise",
    "cognitive behavioural therapy",
    "mediterranean diet",
    "intermittent fasting",
    "telemonitoring",
    "acupuncture",
    "mindfulness training",
    "smoking cessation counselling",
    "bariatric surgery",
    "pharmacist-led care",
];

/// Outcomes usable with any disease.
pub const GENERIC_OUTCOMES: &[&str] = &[
    "quality of life",
    "adverse events",
    "all-cause mortality",
    "treatment adherence",
    "healthcare costs",
];

/// Study designs with their PubMed publication type.
pub const DESIGNS: &[(&str, &str)] = &[
    ("randomized controlled trial", "Randomized Controlled Trial"),
    ("prospective cohort study", "Observational Study"),
    ("retrospective cohort study", "Observational Study"),
    ("case-control study", "Observational Study"),
    ("systematic review and meta-analysis", "Meta-Analysis"),
    ("cross-sectional study", "Observational Study"),
    ("pragmatic trial", "Pragmatic Clinical Trial"),
    ("network meta-analysis", "Network Meta-Analysis"),
];

pub const POPULATIONS: &[&str] = &[
    "adults",
    "older adults",
    "children",
    "women",
    "patients in primary care",
    "hospitalized patients",
    "veterans",
    "patients with comorbidities",
];

pub const COMPARATORS: &[&str] = &["placebo", "usual care", "standard therapy", "no treatment"];

/// (full journal name, ISO abbreviation, ISSN).
pub const JOURNALS: &[(&str, &str, &str)] = &[
    (
        "The New England journal of medicine",
        "N Engl J Med",
        "1533-4406",
    ),
    ("Lancet (London, England)", "Lancet", "1474-547X"),
    ("JAMA", "JAMA", "1538-3598"),
    ("BMJ (Clinical research ed.)", "BMJ", "1756-1833"),
    ("Annals of internal medicine", "Ann Intern Med", "1539-3704"),
    ("Diabetes care", "Diabetes Care", "1935-5548"),
    ("Circulation", "Circulation", "1524-4539"),
    (
        "The Journal of clinical oncology",
        "J Clin Oncol",
        "1527-7755",
    ),
    ("PloS one", "PLoS One", "1932-6203"),
    ("Scientific reports", "Sci Rep", "2045-2322"),
    (
        "The Cochrane database of systematic reviews",
        "Cochrane Database Syst Rev",
        "1469-493X",
    ),
    (
        "Clinical infectious diseases",
        "Clin Infect Dis",
        "1537-6591",
    ),
];

pub const SURNAMES: &[&str] = &[
    "Smith",
    "Garcia",
    "Chen",
    "Müller",
    "Okafor",
    "Tanaka",
    "Rossi",
    "Kowalski",
    "Nguyen",
    "Patel",
    "Johansson",
    "Silva",
    "Kim",
    "Dubois",
    "O'Brien",
    "Haddad",
    "Ivanova",
    "Mensah",
    "Larsen",
    "Cohen",
    "Yamamoto",
    "Fernandez",
    "Novak",
    "Singh",
    "Andersen",
    "Moreau",
    "Wang",
    "Schmidt",
    "Costa",
    "Ali",
];

pub const GIVEN_NAMES: &[&str] = &[
    "Anna", "James", "Wei", "Maria", "Chidi", "Yuki", "Luca", "Piotr", "Linh", "Priya", "Erik",
    "Ana", "Min-jun", "Claire", "Sean", "Omar", "Olga", "Kwame", "Ingrid", "David",
];

pub const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
